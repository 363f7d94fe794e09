//! Serves [`crate::sentinel`] on each Redis database's Sentinel address of this node
//! (`<db>-sentinel`, port 26379): one listener per address, following the table the
//! daemon publishes, RESP2 (and inline commands) over plain TCP on loopback addresses.
//! When a database's term grows, every connection subscribed to `+switch-master` (or a
//! pattern matching it) gets the message.
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::sentinel::{answer, glob_match, switch_message, MasterView, Reply, SWITCH_MASTER};

/// Listen address → the database it tells about.
pub type Table = BTreeMap<SocketAddr, MasterView>;

/// Largest command accepted (a client sending more is cut off).
const MAX_COMMAND: usize = 64 * 1024;

/// Runs until `table`'s sender is dropped: listeners follow the table.
pub async fn run(mut table: watch::Receiver<Table>) {
    let (events, _) = broadcast::channel::<(SocketAddr, String)>(64);
    let mut listeners: BTreeMap<SocketAddr, JoinHandle<()>> = BTreeMap::new();
    let mut last: Table = Table::new();
    loop {
        let now = table.borrow_and_update().clone();
        for (addr, view) in &now {
            if last.get(addr).is_some_and(|old| view.term > old.term) {
                let _ = events.send((*addr, switch_message(view)));
            }
        }
        listeners.retain(|addr, task| {
            let keep = now.contains_key(addr) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for addr in now.keys() {
            if listeners.contains_key(addr) {
                continue;
            }
            match bind(*addr) {
                Ok(l) => {
                    tracing::debug!(%addr, "sentinel endpoint: listening");
                    listeners.insert(*addr, tokio::spawn(accept_loop(l, *addr, table.clone(), events.clone())));
                }
                Err(error) => {
                    tracing::warn!(%addr, %error, "sentinel endpoint: cannot listen; tried again at the next change")
                }
            }
        }
        last = now;
        tokio::select! {
            r = table.changed() => if r.is_err() { break },
            // Retries listeners that could not bind (another node on a shared loopback).
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    for (_, task) in listeners {
        task.abort();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(256)
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    table: watch::Receiver<Table>,
    events: broadcast::Sender<(SocketAddr, String)>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, addr, table.clone(), events.subscribe()));
            }
            Err(error) => {
                tracing::debug!(%addr, %error, "sentinel endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One command from the buffer, if a whole one is there: RESP2 arrays, or an inline line.
fn next_command(buf: &mut BytesMut) -> Result<Option<Vec<Vec<u8>>>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        let Some(end) = buf.iter().position(|b| *b == b'\n') else { return Ok(None) };
        let line = buf.split_to(end + 1);
        let words = String::from_utf8_lossy(&line).split_whitespace().map(|w| w.as_bytes().to_vec()).collect();
        return Ok(Some(words));
    }
    match redis_protocol::resp2::decode::decode(buf) {
        Ok(Some((frame, used))) => {
            let _ = buf.split_to(used);
            match frame {
                OwnedFrame::Array(items) => Ok(Some(
                    items
                        .into_iter()
                        .map(|f| match f {
                            OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => b,
                            OwnedFrame::Integer(i) => i.to_string().into_bytes(),
                            _ => Vec::new(),
                        })
                        .collect(),
                )),
                _ => Err("expected an array of bulk strings".into()),
            }
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn encode(out: &mut BytesMut, frame: OwnedFrame) {
    let _ = redis_protocol::resp2::encode::extend_encode(out, &frame.into_bytes_frame(), false);
}

fn bulk(s: &str) -> OwnedFrame {
    OwnedFrame::BulkString(s.as_bytes().to_vec())
}

async fn connection(
    mut stream: TcpStream,
    addr: SocketAddr,
    table: watch::Receiver<Table>,
    mut events: broadcast::Receiver<(SocketAddr, String)>,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let mut channels: BTreeSet<String> = BTreeSet::new();
    let mut patterns: BTreeSet<String> = BTreeSet::new();
    loop {
        let mut out = BytesMut::new();
        let mut close = false;
        tokio::select! {
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            e = events.recv() => match e {
                Ok((at, message)) if at == addr => {
                    if channels.contains(SWITCH_MASTER) {
                        encode(&mut out, OwnedFrame::Array(vec![bulk("message"), bulk(SWITCH_MASTER), bulk(&message)]));
                    }
                    for p in patterns.iter().filter(|p| glob_match(p, SWITCH_MASTER)) {
                        encode(&mut out, OwnedFrame::Array(vec![bulk("pmessage"), bulk(p), bulk(SWITCH_MASTER), bulk(&message)]));
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        loop {
            let args = match next_command(&mut buf) {
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) => args,
                Ok(None) if buf.len() > MAX_COMMAND => return,
                Ok(None) => break,
                Err(e) => {
                    encode(&mut out, OwnedFrame::Error(format!("ERR Protocol error: {e}")));
                    close = true;
                    break;
                }
            };
            let view = table.borrow().get(&addr).cloned();
            let Some(view) = view else {
                encode(&mut out, OwnedFrame::Error("ERR this database no longer exists".into()));
                close = true;
                break;
            };
            match answer(&view, &args) {
                Reply::Frame(f) => encode(&mut out, f),
                Reply::Close(f) => {
                    encode(&mut out, f);
                    close = true;
                    break;
                }
                Reply::Subscribe { pattern, names } => {
                    let kind = if pattern { "psubscribe" } else { "subscribe" };
                    for n in names {
                        if pattern {
                            patterns.insert(n.clone())
                        } else {
                            channels.insert(n.clone())
                        };
                        let count = (channels.len() + patterns.len()) as i64;
                        encode(&mut out, OwnedFrame::Array(vec![bulk(kind), bulk(&n), OwnedFrame::Integer(count)]));
                    }
                }
                Reply::Unsubscribe { pattern, names } => {
                    let kind = if pattern { "punsubscribe" } else { "unsubscribe" };
                    let all = if pattern { &patterns } else { &channels };
                    let names: Vec<String> = if names.is_empty() { all.iter().cloned().collect() } else { names };
                    for n in names {
                        if pattern {
                            patterns.remove(&n)
                        } else {
                            channels.remove(&n)
                        };
                        let count = (channels.len() + patterns.len()) as i64;
                        encode(&mut out, OwnedFrame::Array(vec![bulk(kind), bulk(&n), OwnedFrame::Integer(count)]));
                    }
                }
            }
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_from_a_buffer() {
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\nPING hello\r\n*2\r\n$3\r\nGE"[..]);
        assert_eq!(next_command(&mut buf), Ok(Some(vec![b"PING".to_vec()])));
        assert_eq!(next_command(&mut buf), Ok(Some(vec![b"PING".to_vec(), b"hello".to_vec()])));
        assert_eq!(next_command(&mut buf), Ok(None), "an incomplete command waits");
        let mut bad = BytesMut::from(&b"*x\r\n"[..]);
        assert!(next_command(&mut bad).is_err());
    }
}
