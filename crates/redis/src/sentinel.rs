//! The Sentinel subset Sentinel-aware clients use, answered from holdfast's own view of
//! a Redis database (pure). The master's address is the database's master endpoint
//! (`<db>`: every node's proxy leads it to the master of the current term) and the
//! replicas' is its `-ro` endpoint, so the answers never change on a failover: a client
//! that asks again after its connection was cut lands on the new master.
//!
//! Served: `PING`, `AUTH` (accepted, as Sentinel without a password does), `HELLO 2`,
//! `CLIENT …` (accepted), `ROLE`, `INFO`, `SENTINEL get-master-addr-by-name |
//! get-primary-addr-by-name | masters | primaries | master | primary | replicas | slaves |
//! sentinels | myid | ckquorum`, `SUBSCRIBE`/`PSUBSCRIBE` (the server publishes
//! `+switch-master <name> <ip> <port> <ip> <port>` when the term changes), `QUIT`.
use std::net::Ipv4Addr;

use redis_protocol::resp2::types::OwnedFrame;

/// One Redis database as its Sentinel endpoint tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterView {
    /// The database's name (the "master name" clients ask for).
    pub name: String,
    /// The master endpoint.
    pub master: (Ipv4Addr, u16),
    /// A master of the current term answers (else the master is reported down).
    pub master_up: bool,
    /// The replicas endpoint, and how many replicas answer behind it.
    pub replicas: (Ipv4Addr, u16),
    pub replicas_up: u32,
    /// The database's term (Sentinel's `config-epoch`).
    pub term: u64,
}

/// What to do with one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Send this frame.
    Frame(OwnedFrame),
    /// Subscribe to channels (`pattern`: `PSUBSCRIBE`) and confirm each.
    Subscribe { pattern: bool, names: Vec<String> },
    /// Unsubscribe (all when `names` is empty).
    Unsubscribe { pattern: bool, names: Vec<String> },
    /// Send this frame, then close the connection.
    Close(OwnedFrame),
}

/// The channel failovers are published on.
pub const SWITCH_MASTER: &str = "+switch-master";

fn bulk(s: impl AsRef<[u8]>) -> OwnedFrame {
    OwnedFrame::BulkString(s.as_ref().to_vec())
}

fn simple(s: &str) -> OwnedFrame {
    OwnedFrame::SimpleString(s.as_bytes().to_vec())
}

fn error(s: impl Into<String>) -> OwnedFrame {
    OwnedFrame::Error(s.into())
}

fn pairs(items: &[(&str, String)]) -> OwnedFrame {
    OwnedFrame::Array(items.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect())
}

/// A stable 40-hex id for `text` (Sentinel's ids look like this).
fn id(text: &str) -> String {
    // FNV-1a, widened: an identifier, not a secret.
    let mut out = String::new();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0..3u8 {
        for b in text.bytes().chain([round]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(40);
    out
}

fn master_state(v: &MasterView) -> OwnedFrame {
    let flags = if v.master_up { "master" } else { "master,s_down,o_down" };
    pairs(&[
        ("name", v.name.clone()),
        ("ip", v.master.0.to_string()),
        ("port", v.master.1.to_string()),
        ("runid", id(&format!("{}/{}", v.name, v.term))),
        ("flags", flags.into()),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", "0".into()),
        ("last-ping-reply", "0".into()),
        ("down-after-milliseconds", "1500".into()),
        ("info-refresh", "0".into()),
        ("role-reported", "master".into()),
        ("role-reported-time", "0".into()),
        ("config-epoch", v.term.to_string()),
        ("num-slaves", v.replicas_up.to_string()),
        ("num-other-sentinels", "0".into()),
        ("quorum", "1".into()),
        ("failover-timeout", "10000".into()),
        ("parallel-syncs", "1".into()),
    ])
}

fn replicas(v: &MasterView) -> OwnedFrame {
    let one = |i: u32| {
        pairs(&[
            ("name", format!("{}:{}", v.replicas.0, v.replicas.1)),
            ("ip", v.replicas.0.to_string()),
            ("port", v.replicas.1.to_string()),
            ("runid", id(&format!("{}/replica{i}", v.name))),
            ("flags", "slave".into()),
            ("link-pending-commands", "0".into()),
            ("link-refcount", "1".into()),
            ("last-ping-sent", "0".into()),
            ("last-ok-ping-reply", "0".into()),
            ("last-ping-reply", "0".into()),
            ("down-after-milliseconds", "1500".into()),
            ("info-refresh", "0".into()),
            ("role-reported", "slave".into()),
            ("role-reported-time", "0".into()),
            ("master-link-down-time", "0".into()),
            ("master-link-status", "ok".into()),
            ("master-host", v.master.0.to_string()),
            ("master-port", v.master.1.to_string()),
            ("slave-priority", "100".into()),
            ("slave-repl-offset", "0".into()),
            ("replica-announced", "1".into()),
        ])
    };
    OwnedFrame::Array((0..v.replicas_up).map(one).collect())
}

/// The `+switch-master` message for a term change.
pub fn switch_message(v: &MasterView) -> String {
    let (ip, port) = v.master;
    format!("{} {ip} {port} {ip} {port}", v.name)
}

/// Whether `channel` matches a `PSUBSCRIBE` glob (`*`, `?`, literal otherwise).
pub fn glob_match(pattern: &str, channel: &str) -> bool {
    fn go(p: &[u8], c: &[u8]) -> bool {
        match (p.first(), c.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], c) || (!c.is_empty() && go(p, &c[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &c[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &c[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), channel.as_bytes())
}

/// The answer to one command (`args[0]` is its name) about the database `v`.
pub fn answer(v: &MasterView, args: &[Vec<u8>]) -> Reply {
    let word = |i: usize| args.get(i).map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).unwrap_or_default();
    let arg = |i: usize| args.get(i).map(|a| String::from_utf8_lossy(a).into_owned()).unwrap_or_default();
    let names = || args.iter().skip(1).map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>();
    let ours = |name: &str| name == v.name;
    let no_master = || error("IDONTKNOW No such master with that name");
    Reply::Frame(match word(0).as_str() {
        "ping" => match args.get(1) {
            Some(msg) => bulk(msg),
            None => simple("PONG"),
        },
        "auth" | "client" | "select" => simple("OK"),
        "hello" => match word(1).as_str() {
            "" | "2" => pairs(&[
                ("server", "redis".into()),
                ("version", "7.0.0".into()),
                ("proto", "2".into()),
                ("mode", "sentinel".into()),
                ("role", "sentinel".into()),
            ]),
            _ => error("NOPROTO this Sentinel endpoint speaks RESP2 only"),
        },
        "quit" => return Reply::Close(simple("OK")),
        "role" => OwnedFrame::Array(vec![bulk("sentinel"), OwnedFrame::Array(vec![bulk(&v.name)])]),
        "info" => bulk(format!(
            "# Server\r\nredis_version:7.0.0\r\nredis_mode:sentinel\r\n\r\n# Sentinel\r\nsentinel_masters:1\r\nsentinel_tilt:0\r\nsentinel_running_scripts:0\r\nsentinel_scripts_queue_length:0\r\nmaster0:name={},status={},address={}:{},slaves={},sentinels=1\r\n",
            v.name,
            if v.master_up { "ok" } else { "odown" },
            v.master.0,
            v.master.1,
            v.replicas_up
        )),
        "command" => OwnedFrame::Array(Vec::new()),
        "subscribe" | "psubscribe" if args.len() >= 2 => {
            return Reply::Subscribe { pattern: word(0) == "psubscribe", names: names() }
        }
        "unsubscribe" | "punsubscribe" => {
            return Reply::Unsubscribe { pattern: word(0) == "punsubscribe", names: names() }
        }
        "sentinel" => match word(1).as_str() {
            "get-master-addr-by-name" | "get-primary-addr-by-name" => {
                if ours(&arg(2)) {
                    OwnedFrame::Array(vec![bulk(v.master.0.to_string()), bulk(v.master.1.to_string())])
                } else {
                    OwnedFrame::Null
                }
            }
            "masters" | "primaries" => OwnedFrame::Array(vec![master_state(v)]),
            "master" | "primary" if ours(&arg(2)) => master_state(v),
            "replicas" | "slaves" if ours(&arg(2)) => replicas(v),
            "sentinels" if ours(&arg(2)) => OwnedFrame::Array(Vec::new()),
            "master" | "primary" | "replicas" | "slaves" | "sentinels" | "ckquorum" if !ours(&arg(2)) => no_master(),
            "ckquorum" => simple("OK 1 usable Sentinels. Quorum and failover authorization can be reached"),
            "myid" => bulk(id(&format!("{}/sentinel", v.name))),
            other => error(format!(
                "ERR Unknown sentinel subcommand '{other}' (holdfast serves get-master-addr-by-name, masters, master, replicas, sentinels, myid, ckquorum)"
            )),
        },
        other => error(format!("ERR unknown command '{other}' (this is holdfast's Sentinel-compatible endpoint)")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> MasterView {
        MasterView {
            name: "cache".into(),
            master: (Ipv4Addr::new(127, 64, 0, 7), 6379),
            master_up: true,
            replicas: (Ipv4Addr::new(127, 64, 0, 8), 6379),
            replicas_up: 2,
            term: 3,
        }
    }
    fn ask(line: &str) -> Reply {
        let args: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        answer(&view(), &args)
    }
    fn frame(line: &str) -> OwnedFrame {
        match ask(line) {
            Reply::Frame(f) => f,
            other => panic!("{line}: {other:?}"),
        }
    }
    fn field(state: &OwnedFrame, key: &str) -> String {
        let OwnedFrame::Array(items) = state else { panic!("not an array: {state:?}") };
        let i = items.iter().position(|f| *f == bulk(key)).unwrap_or_else(|| panic!("no {key}"));
        match &items[i + 1] {
            OwnedFrame::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_master_is_the_master_endpoint() {
        assert_eq!(
            frame("SENTINEL get-master-addr-by-name cache"),
            OwnedFrame::Array(vec![bulk("127.64.0.7"), bulk("6379")])
        );
        assert_eq!(frame("sentinel GET-PRIMARY-ADDR-BY-NAME cache"), frame("SENTINEL get-master-addr-by-name cache"));
        assert_eq!(frame("SENTINEL get-master-addr-by-name other"), OwnedFrame::Null);
        let OwnedFrame::Array(masters) = frame("SENTINEL masters") else { panic!() };
        assert_eq!(field(&masters[0], "flags"), "master");
        assert_eq!(field(&masters[0], "num-other-sentinels"), "0");
        assert_eq!(field(&masters[0], "config-epoch"), "3");
        let down = answer(
            &MasterView { master_up: false, ..view() },
            &[b"SENTINEL".to_vec(), b"master".to_vec(), b"cache".to_vec()],
        );
        let Reply::Frame(down) = down else { panic!() };
        assert_eq!(field(&down, "flags"), "master,s_down,o_down");
    }

    #[test]
    fn replicas_are_the_ro_endpoint() {
        let OwnedFrame::Array(r) = frame("SENTINEL replicas cache") else { panic!() };
        assert_eq!(r.len(), 2);
        assert_eq!(
            (field(&r[0], "ip"), field(&r[0], "port"), field(&r[0], "flags")),
            ("127.64.0.8".into(), "6379".into(), "slave".into())
        );
        assert_eq!(frame("SENTINEL sentinels cache"), OwnedFrame::Array(vec![]));
        assert!(matches!(frame("SENTINEL slaves nope"), OwnedFrame::Error(e) if e.starts_with("IDONTKNOW")));
    }

    #[test]
    fn connection_commands_and_pubsub() {
        assert_eq!(frame("PING"), simple("PONG"));
        assert_eq!(frame("AUTH secret"), simple("OK"));
        assert_eq!(frame("ROLE"), OwnedFrame::Array(vec![bulk("sentinel"), OwnedFrame::Array(vec![bulk("cache")])]));
        assert!(matches!(frame("FLUSHALL"), OwnedFrame::Error(_)));
        assert_eq!(
            ask("SUBSCRIBE +switch-master"),
            Reply::Subscribe { pattern: false, names: vec!["+switch-master".into()] }
        );
        assert_eq!(ask("PUNSUBSCRIBE"), Reply::Unsubscribe { pattern: true, names: vec![] });
        assert!(matches!(ask("QUIT"), Reply::Close(_)));
        assert_eq!(switch_message(&view()), "cache 127.64.0.7 6379 127.64.0.7 6379");
        assert!(glob_match("*", SWITCH_MASTER) && glob_match("+switch-*", SWITCH_MASTER));
        assert!(glob_match("+sw?tch-master", SWITCH_MASTER) && !glob_match("+sdown", SWITCH_MASTER));
    }
}
