//! The Redis relay for `durability: replicated` ([`crate::ServiceNet::redis_wait`]): a
//! write is acknowledged to the client only once a replica has it.
//!
//! The relay reads whole commands from the client (RESP arrays or inline lines), forwards
//! them as they are, and after each batch that holds a write appends `WAIT <replicas>
//! <timeout>` on the same connection (Redis answers commands in order). Replies of the
//! batch are held until the `WAIT` answer arrives; the answer itself is swallowed. When
//! it counts enough replicas the held replies go to the client unchanged; when it does
//! not, each write's reply becomes a `-NOREPLICAS` error (the write may be on the master
//! only: not acknowledged), and reads pass unchanged. Pipelines stay pipelines: one `WAIT`
//! per batch, not per command.
//!
//! Not interpreted (relayed as raw bytes from then on): a connection that subscribes
//! (`SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`), `MONITOR`s or turns replies off (`CLIENT
//! REPLY`), since replies no longer follow commands one to one. Inside `MULTI` no `WAIT`
//! is added; the one after `EXEC` covers the transaction.
//!
//! [`frame_end`] and [`Batch`] are pure and tested on bytes; [`relay`] is the IO.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a `ServiceNet` with `redis_wait` asks of each write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisWait {
    /// Replicas that must hold a write before it is acknowledged.
    pub replicas: u32,
    /// How long a write waits for them before it is answered with an error.
    pub timeout: Duration,
}

/// Where the RESP value starting at `buf[pos]` ends (exclusive), `None` while it is
/// incomplete, `Err` when the bytes are not RESP.
pub fn frame_end(buf: &[u8], pos: usize) -> Result<Option<usize>, String> {
    let Some(&kind) = buf.get(pos) else { return Ok(None) };
    let Some(nl) = find_crlf(buf, pos + 1) else { return Ok(None) };
    let after = nl + 2;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(&buf[pos + 1..nl])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| format!("bad length after `{}`", kind as char))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some(after)),
        b'$' | b'!' | b'=' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some(after));
            }
            let end = after + n as usize + 2;
            Ok((end <= buf.len()).then_some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some(after));
            }
            let items = if matches!(kind, b'%' | b'|') { n * 2 } else { n };
            let mut at = after;
            for _ in 0..items {
                match frame_end(buf, at)? {
                    Some(e) => at = e,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // An attribute precedes the value it describes: both are one reply.
                return frame_end(buf, at);
            }
            Ok(Some(at))
        }
        other => Err(format!("unexpected byte {other:#04x}")),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
}

/// One command from the client: where it ends and its name and first argument,
/// lowercased.
fn command(buf: &[u8], pos: usize) -> Result<Option<(usize, String, String)>, String> {
    let Some(&first) = buf.get(pos) else { return Ok(None) };
    if first != b'*' {
        // Inline: one line of words.
        let Some(nl) = buf[pos..].iter().position(|b| *b == b'\n') else { return Ok(None) };
        let line = String::from_utf8_lossy(&buf[pos..pos + nl]).to_ascii_lowercase();
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let arg = words.next().unwrap_or_default().to_string();
        return Ok(Some((pos + nl + 1, name, arg)));
    }
    let Some(end) = frame_end(buf, pos)? else { return Ok(None) };
    let mut words = Vec::new();
    let Some(nl) = find_crlf(buf, pos + 1) else { return Ok(None) };
    let mut at = nl + 2;
    while words.len() < 2 && at < end {
        if buf[at] != b'$' {
            break;
        }
        let Some(l) = find_crlf(buf, at + 1) else { break };
        let n: usize = std::str::from_utf8(&buf[at + 1..l]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        let start = l + 2;
        words.push(String::from_utf8_lossy(&buf[start..(start + n).min(end)]).to_ascii_lowercase());
        at = start + n + 2;
    }
    let mut words = words.into_iter();
    Ok(Some((end, words.next().unwrap_or_default(), words.next().unwrap_or_default())))
}

/// Commands that change nothing (no `WAIT` needed after them). Anything else counts as a
/// write: an unneeded `WAIT` costs one round trip, a missing one an unreplicated write.
const READS: &[&str] = &[
    "get",
    "mget",
    "exists",
    "ttl",
    "pttl",
    "type",
    "strlen",
    "getrange",
    "substr",
    "hget",
    "hgetall",
    "hmget",
    "hkeys",
    "hvals",
    "hlen",
    "hexists",
    "hstrlen",
    "hscan",
    "hrandfield",
    "lrange",
    "llen",
    "lindex",
    "lpos",
    "smembers",
    "sismember",
    "smismember",
    "scard",
    "srandmember",
    "sscan",
    "sinter",
    "sunion",
    "sdiff",
    "sintercard",
    "zrange",
    "zrangebyscore",
    "zrevrange",
    "zrevrangebyscore",
    "zrangebylex",
    "zrevrangebylex",
    "zscore",
    "zmscore",
    "zrank",
    "zrevrank",
    "zcard",
    "zcount",
    "zlexcount",
    "zscan",
    "zrandmember",
    "zinter",
    "zunion",
    "zdiff",
    "zintercard",
    "xrange",
    "xrevrange",
    "xlen",
    "xinfo",
    "xpending",
    "keys",
    "scan",
    "randomkey",
    "dbsize",
    "ping",
    "echo",
    "info",
    "time",
    "role",
    "auth",
    "hello",
    "select",
    "client",
    "command",
    "config",
    "memory",
    "object",
    "dump",
    "bitcount",
    "bitpos",
    "getbit",
    "bitfield_ro",
    "geopos",
    "geodist",
    "geohash",
    "georadius_ro",
    "georadiusbymember_ro",
    "geosearch",
    "lcs",
    "expiretime",
    "pexpiretime",
    "wait",
    "waitaof",
    "quit",
    "reset",
    "readonly",
    "readwrite",
    "eval_ro",
    "evalsha_ro",
    "fcall_ro",
    "script",
    "lastsave",
    "slowlog",
    "latency",
    "unwatch",
    "watch",
    "discard",
    "multi",
    "pfcount",
    "sort_ro",
    "touch",
    "asking",
];

/// What a forwarded command's reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Passed on as it is, whatever the `WAIT` says.
    Read,
    /// Replaced by an error when the `WAIT` after it counts too few replicas.
    Write,
    /// Inside `MULTI` (`+QUEUED`): passed on; `EXEC` is the write.
    Queued,
    /// The `WAIT` the relay added: swallowed; decides the held replies.
    Wait,
    /// From this reply on, bytes are relayed raw (subscribed, monitoring, replies off).
    Raw,
}

/// The client side's state: splits client bytes into commands and decides where `WAIT`s go.
#[derive(Debug, Default)]
pub struct Batch {
    in_multi: bool,
    raw: bool,
}

impl Batch {
    /// Takes every whole command from `buf` (leaving a partial one) and returns the bytes
    /// to send to the server and the kind of each reply to expect, in order.
    pub fn take(&mut self, buf: &mut Vec<u8>, wait: &RedisWait) -> Result<(Vec<u8>, Vec<Kind>), String> {
        if self.raw {
            return Ok((std::mem::take(buf), Vec::new()));
        }
        let mut kinds = Vec::new();
        let mut pos = 0;
        let mut writes = false;
        while let Some((end, name, arg)) = command(buf, pos)? {
            pos = end;
            if name.is_empty() {
                continue; // an empty inline line: Redis ignores it
            }
            let kind = if self.in_multi && !matches!(name.as_str(), "exec" | "discard" | "multi") {
                Kind::Queued
            } else if READS.contains(&name.as_str()) {
                Kind::Read
            } else {
                Kind::Write
            };
            match (name.as_str(), arg.as_str()) {
                ("multi", _) => self.in_multi = true,
                ("exec" | "discard", _) => self.in_multi = false,
                _ => {}
            }
            let turns_raw =
                matches!(name.as_str(), "subscribe" | "psubscribe" | "ssubscribe" | "monitor" | "sync" | "psync")
                    || (name == "client" && arg == "reply");
            if turns_raw {
                kinds.push(Kind::Raw);
                self.raw = true;
                pos = buf.len();
                break;
            }
            writes |= kind == Kind::Write;
            kinds.push(kind);
        }
        let mut out: Vec<u8> = buf.drain(..pos).collect();
        if writes && !self.in_multi && !self.raw {
            let (n, ms) = (wait.replicas.to_string(), wait.timeout.as_millis().to_string());
            out.extend_from_slice(
                format!("*3\r\n$4\r\nWAIT\r\n${}\r\n{n}\r\n${}\r\n{ms}\r\n", n.len(), ms.len()).as_bytes(),
            );
            kinds.push(Kind::Wait);
        }
        Ok((out, kinds))
    }
}

/// The error a write gets when no replica acknowledged it in time.
pub fn not_replicated(wait: &RedisWait, got: i64) -> Vec<u8> {
    format!(
        "-NOREPLICAS write not acknowledged by {} replica(s) within {} ms ({got} did; durability: replicated): it may be on the master only\r\n",
        wait.replicas,
        wait.timeout.as_millis()
    )
    .into_bytes()
}

/// The server side's state: matches replies to the kinds the client side queued.
#[derive(Debug, Default)]
pub struct Replies {
    held: Vec<(Kind, Vec<u8>)>,
    raw: bool,
}

impl Replies {
    /// Takes every whole reply from `buf` given the queued kinds; returns the bytes to
    /// send to the client now. `None` from `kinds.pop_front()` means a reply nobody asked
    /// for (a push message): passed on.
    pub fn take(&mut self, buf: &mut Vec<u8>, kinds: &mut VecDeque<Kind>, wait: &RedisWait) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if self.raw {
            out.append(buf);
            return Ok(out);
        }
        let mut pos = 0;
        while !self.raw {
            let Some(end) = frame_end(buf, pos)? else { break };
            let reply = &buf[pos..end];
            pos = end;
            if reply.first() == Some(&b'>') {
                out.extend_from_slice(reply); // a RESP3 push: not a reply
                continue;
            }
            match kinds.pop_front() {
                Some(Kind::Wait) => {
                    let got: i64 =
                        std::str::from_utf8(&reply[1..reply.len() - 2]).ok().and_then(|s| s.parse().ok()).unwrap_or(-1);
                    let enough = reply.first() == Some(&b':') && got >= i64::from(wait.replicas);
                    for (kind, bytes) in self.held.drain(..) {
                        if kind == Kind::Write && !enough {
                            out.extend(not_replicated(wait, got));
                        } else {
                            out.extend(bytes);
                        }
                    }
                }
                Some(Kind::Raw) => {
                    out.extend(self.held.drain(..).flat_map(|(_, b)| b));
                    out.extend_from_slice(reply);
                    self.raw = true;
                }
                Some(kind) if kinds.contains(&Kind::Wait) || !self.held.is_empty() => {
                    self.held.push((kind, reply.to_vec()));
                }
                Some(_) | None => out.extend_from_slice(reply),
            }
        }
        buf.drain(..pos);
        if self.raw {
            out.append(buf);
        }
        Ok(out)
    }
}

/// Relays one connection with a `WAIT` after every batch of writes, until either side
/// closes; client bytes go on only while `allowed` says so (the node's lease, checked at
/// every read).
pub async fn relay<C, S>(
    client: C,
    server: S,
    wait: RedisWait,
    allowed: &(dyn Fn() -> bool + Sync),
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(server);
    let kinds: Arc<Mutex<VecDeque<Kind>>> = Arc::default();
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let up = {
        let kinds = kinds.clone();
        async move {
            let mut batch = Batch::default();
            let mut buf = Vec::with_capacity(16 * 1024);
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                let n = cr.read(&mut chunk).await?;
                if n == 0 {
                    sw.shutdown().await?;
                    return Ok::<(), std::io::Error>(());
                }
                if !allowed() {
                    return Err(crate::proxy::lease_lost());
                }
                buf.extend_from_slice(&chunk[..n]);
                let (out, k) = batch.take(&mut buf, &wait).map_err(bad)?;
                kinds.lock().unwrap_or_else(|e| e.into_inner()).extend(k);
                if !out.is_empty() {
                    sw.write_all(&out).await?;
                }
            }
        }
    };
    let down = async move {
        let mut replies = Replies::default();
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = sr.read(&mut chunk).await?;
            if n == 0 {
                cw.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            buf.extend_from_slice(&chunk[..n]);
            let out = {
                let mut k = kinds.lock().unwrap_or_else(|e| e.into_inner());
                replies.take(&mut buf, &mut k, &wait).map_err(bad)?
            };
            if !out.is_empty() {
                cw.write_all(&out).await?;
            }
        }
    };
    // Either direction ending ends the connection (a client that half-closes has no
    // replies left to wait for that matter more than the server closing).
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: RedisWait = RedisWait { replicas: 1, timeout: Duration::from_millis(1000) };
    const WAIT_CMD: &str = "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$4\r\n1000\r\n";

    fn take(batch: &mut Batch, input: &str) -> (String, Vec<Kind>) {
        let mut buf = input.as_bytes().to_vec();
        let (out, kinds) = batch.take(&mut buf, &WAIT).expect("commands");
        (String::from_utf8(out).expect("utf8"), kinds)
    }

    #[test]
    fn frames_end_where_resp_says() {
        assert_eq!(frame_end(b"+OK\r\n", 0), Ok(Some(5)));
        assert_eq!(frame_end(b"$3\r\nabc\r\n", 0), Ok(Some(9)));
        assert_eq!(frame_end(b"$3\r\nab", 0), Ok(None));
        assert_eq!(frame_end(b"$-1\r\n", 0), Ok(Some(5)));
        assert_eq!(frame_end(b"*2\r\n:1\r\n$1\r\nx\r\n", 0), Ok(Some(15)));
        assert_eq!(frame_end(b"*2\r\n:1\r\n", 0), Ok(None));
        assert_eq!(frame_end(b"%1\r\n+a\r\n:1\r\n", 0), Ok(Some(12)));
        assert_eq!(frame_end(b"|1\r\n+a\r\n:1\r\n+OK\r\n", 0), Ok(Some(17)), "an attribute and its value");
        assert!(frame_end(b"?x\r\n", 0).is_err());
    }

    #[test]
    fn a_batch_of_writes_gets_one_wait_and_reads_get_none() {
        let mut b = Batch::default();
        let set = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        let get = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let (out, kinds) = take(&mut b, &format!("{set}{set}{get}"));
        assert_eq!(out, format!("{set}{set}{get}{WAIT_CMD}"));
        assert_eq!(kinds, [Kind::Write, Kind::Write, Kind::Read, Kind::Wait]);
        let (out, kinds) = take(&mut b, get);
        assert_eq!((out.as_str(), kinds), (get, vec![Kind::Read]));
        // A partial command stays until it is whole.
        let mut buf = set.as_bytes()[..10].to_vec();
        let (out, kinds) = b.take(&mut buf, &WAIT).expect("partial");
        assert!(out.is_empty() && kinds.is_empty() && buf.len() == 10);
        // Inline commands count too.
        let (out, kinds) = take(&mut b, "set a b\r\n");
        assert_eq!((out, kinds), (format!("set a b\r\n{WAIT_CMD}"), vec![Kind::Write, Kind::Wait]));
    }

    #[test]
    fn a_transaction_is_covered_by_one_wait_after_exec() {
        let mut b = Batch::default();
        let (out, kinds) = take(&mut b, "MULTI\r\nSET a 1\r\n");
        assert_eq!((out.as_str(), kinds), ("MULTI\r\nSET a 1\r\n", vec![Kind::Read, Kind::Queued]));
        let (out, kinds) = take(&mut b, "INCR a\r\nEXEC\r\n");
        assert_eq!(
            (out, kinds),
            (format!("INCR a\r\nEXEC\r\n{WAIT_CMD}"), vec![Kind::Queued, Kind::Write, Kind::Wait])
        );
    }

    #[test]
    fn subscribing_turns_the_connection_raw() {
        let mut b = Batch::default();
        let (out, kinds) = take(&mut b, "SET a 1\r\nSUBSCRIBE ch\r\nPING\r\n");
        assert_eq!((out.as_str(), kinds), ("SET a 1\r\nSUBSCRIBE ch\r\nPING\r\n", vec![Kind::Write, Kind::Raw]));
        let (out, kinds) = take(&mut b, "anything");
        assert_eq!((out.as_str(), kinds), ("anything", vec![]));
    }

    #[test]
    fn replies_are_held_until_the_wait_answers() {
        let mut r = Replies::default();
        let mut kinds: VecDeque<Kind> = [Kind::Write, Kind::Read, Kind::Wait, Kind::Read].into();
        let mut buf = b"+OK\r\n$1\r\nv\r\n".to_vec();
        assert_eq!(r.take(&mut buf, &mut kinds, &WAIT), Ok(Vec::new()), "held");
        let mut buf = b":1\r\n$1\r\nw\r\n".to_vec();
        assert_eq!(r.take(&mut buf, &mut kinds, &WAIT), Ok(b"+OK\r\n$1\r\nv\r\n$1\r\nw\r\n".to_vec()));
        assert!(kinds.is_empty());
    }

    #[test]
    fn writes_no_replica_acknowledged_become_errors() {
        let mut r = Replies::default();
        let mut kinds: VecDeque<Kind> = [Kind::Write, Kind::Read, Kind::Wait].into();
        let mut buf = b"+OK\r\n$1\r\nv\r\n:0\r\n".to_vec();
        let out = String::from_utf8(r.take(&mut buf, &mut kinds, &WAIT).expect("replies")).expect("utf8");
        assert!(out.starts_with("-NOREPLICAS write not acknowledged by 1 replica(s) within 1000 ms (0 did"), "{out}");
        assert!(out.ends_with("\r\n$1\r\nv\r\n"), "the read passes: {out}");
        // A push message is passed on at once, without taking a reply's place.
        let mut kinds: VecDeque<Kind> = [Kind::Read].into();
        let mut buf = b">2\r\n$7\r\nmessage\r\n$1\r\nx\r\n+PONG\r\n".to_vec();
        let out = r.take(&mut buf, &mut kinds, &WAIT).expect("push");
        assert_eq!(out, b">2\r\n$7\r\nmessage\r\n$1\r\nx\r\n+PONG\r\n".to_vec());
    }
}
