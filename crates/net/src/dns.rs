//! The DNS servers: hickory-server's UDP and TCP transport with our own request handler,
//! which asks a pure decision about the current table and turns the result into wire
//! records: `dns_answer::answer` for the internal zone, `public_dns::answer` for an edge
//! node's public zones. Answers follow `NetHandle::update` at once: every query reads the
//! newest table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, NULL, SOA, SRV, TXT};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::UdpSocket;

use crate::dns_answer::{self, Answer, QType, Rcode, Zone};
use crate::error::NetError;
use crate::net::Shared;
use crate::proxy::bind_tcp;
use crate::public_dns::{self, PubData, PubQType, PubRcode};
use crate::stats::inc;
use crate::RecordData;

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

pub(crate) struct Handler {
    shared: Arc<Shared>,
    /// Answer the edge's public zones instead of the internal one.
    public: bool,
}

/// Binds UDP and TCP on `addr` (with port 0: the same free port for both) and starts serving
/// the internal zone, or with `public` the edge's public zones.
pub(crate) fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    public: bool,
) -> Result<(Server<Handler>, SocketAddr), NetError> {
    let mut attempts = 0;
    let (udp, tcp, bound) = loop {
        attempts += 1;
        let udp =
            std::net::UdpSocket::bind(addr).map_err(|source| NetError::Bind { what: "dns (udp)", addr, source })?;
        let bound = udp.local_addr().map_err(|source| NetError::Bind { what: "dns (udp)", addr, source })?;
        match bind_tcp(bound) {
            Ok(tcp) => break (udp, tcp, bound),
            // Port 0 picked a UDP port whose TCP twin is taken: pick again.
            Err(_) if addr.port() == 0 && attempts < 20 => continue,
            Err(source) => return Err(NetError::Bind { what: "dns (tcp)", addr: bound, source }),
        }
    };
    udp.set_nonblocking(true).map_err(|source| NetError::Bind { what: "dns (udp)", addr: bound, source })?;
    let udp = UdpSocket::from_std(udp).map_err(|source| NetError::Bind { what: "dns (udp)", addr: bound, source })?;
    let mut server = Server::new(Handler { shared, public });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 64);
    Ok((server, bound))
}

fn qtype(t: RecordType) -> QType {
    match t {
        RecordType::A => QType::A,
        RecordType::SRV => QType::Srv,
        RecordType::SOA => QType::Soa,
        RecordType::ANY => QType::Any,
        _ => QType::Other,
    }
}

/// Wire records of one `answer` section.
fn records(zone: &Zone, rrs: &[dns_answer::Rr]) -> Vec<Record> {
    rrs.iter()
        .filter_map(|rr| {
            let name = Name::from_ascii(&rr.name).ok()?;
            let data = match &rr.data {
                dns_answer::RData::A(ip) => RData::A(A(*ip)),
                dns_answer::RData::Srv { port, target } => {
                    RData::SRV(SRV::new(0, 0, *port, Name::from_ascii(target).ok()?))
                }
                dns_answer::RData::Soa => return soa(zone),
            };
            Some(Record::from_rdata(name, zone.ttl, data))
        })
        .collect()
}

fn soa(zone: &Zone) -> Option<Record> {
    let apex = Name::from_ascii(format!("{}.", zone.domain)).ok()?;
    let mname = Name::from_ascii(format!("ns.{}.", zone.domain)).ok()?;
    let rname = Name::from_ascii(format!("hostmaster.{}.", zone.domain)).ok()?;
    let data = SOA::new(mname, rname, zone.serial, 3600, 600, 86400, zone.ttl);
    Some(Record::from_rdata(apex, zone.ttl, RData::SOA(data)))
}

fn pub_qtype(t: RecordType) -> PubQType {
    match t {
        RecordType::A => PubQType::A,
        RecordType::AAAA => PubQType::Aaaa,
        RecordType::CNAME => PubQType::Cname,
        RecordType::MX => PubQType::Mx,
        RecordType::TXT => PubQType::Txt,
        RecordType::SRV => PubQType::Srv,
        RecordType::CAA => PubQType::Caa,
        RecordType::NS => PubQType::Ns,
        RecordType::SOA => PubQType::Soa,
        RecordType::ANY => PubQType::Any,
        _ => PubQType::Other,
    }
}

/// TXT data as character-strings of at most 255 bytes.
fn txt_chunks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > 255 {
        let mut cut = 255;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    out.push(rest.to_string());
    out
}

fn record_rdata(data: &RecordData) -> Option<RData> {
    Some(match data {
        RecordData::A(ip) => RData::A(A(*ip)),
        RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        RecordData::Cname(n) => RData::CNAME(CNAME(Name::from_ascii(n).ok()?)),
        RecordData::Mx { preference, exchange } => RData::MX(MX::new(*preference, Name::from_ascii(exchange).ok()?)),
        RecordData::Txt(t) => RData::TXT(TXT::new(txt_chunks(t))),
        RecordData::Srv { priority, weight, port, target } => {
            RData::SRV(SRV::new(*priority, *weight, *port, Name::from_ascii(target).ok()?))
        }
        RecordData::Caa { flags, tag, value } => {
            // RFC 8659 wire form: flags, tag length, tag, value.
            let mut wire = vec![*flags, u8::try_from(tag.len()).ok()?];
            wire.extend_from_slice(tag.as_bytes());
            wire.extend_from_slice(value.as_bytes());
            RData::Unknown { code: RecordType::CAA, rdata: NULL::with(wire) }
        }
    })
}

fn public_soa(zone: &crate::PublicZone, serial: u32) -> Option<Record> {
    let apex = Name::from_ascii(format!("{}.", zone.name)).ok()?;
    let mname = Name::from_ascii(format!("{}.", public_dns::ns_name(&zone.name, 0))).ok()?;
    let rname = Name::from_ascii(format!("hostmaster.{}.", zone.name)).ok()?;
    let data = SOA::new(mname, rname, serial, 3600, 600, 86400, zone.ttl);
    Some(Record::from_rdata(apex, zone.ttl, RData::SOA(data)))
}

fn public_records(zone: &crate::PublicZone, serial: u32, rrs: &[public_dns::PubRr]) -> Vec<Record> {
    rrs.iter()
        .filter_map(|rr| {
            let name = Name::from_ascii(&rr.name).ok()?;
            let data = match &rr.data {
                PubData::Ip(std::net::IpAddr::V4(ip)) => RData::A(A(*ip)),
                PubData::Ip(std::net::IpAddr::V6(ip)) => RData::AAAA(AAAA(*ip)),
                PubData::Ns(ns) => RData::NS(NS(Name::from_ascii(ns).ok()?)),
                PubData::Soa => return public_soa(zone, serial),
                PubData::Record(d) => record_rdata(d)?,
            };
            Some(Record::from_rdata(name, rr.ttl, data))
        })
        .collect()
}

/// A reply in wire records, whichever zone kind answered.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
}

/// The question of a standard query in class IN: (name, type).
fn question(request: &Request) -> Result<(String, RecordType), ResponseCode> {
    if request.metadata.message_type != MessageType::Query {
        return Err(ResponseCode::FormErr);
    }
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    let info = request.request_info().map_err(|_| ResponseCode::FormErr)?;
    if info.query.query_class() != DNSClass::IN {
        return Err(ResponseCode::Refused);
    }
    Ok((info.query.name().to_string(), info.query.query_type()))
}

impl Handler {
    fn reply_public(&self, request: &Request) -> Result<Reply, ResponseCode> {
        let (name, qtype) = question(request)?;
        let compiled = self.shared.current();
        let t = &compiled.table;
        let answer = public_dns::answer(&t.zones, &t.edge_addresses, &name, pub_qtype(qtype));
        let code = match answer.rcode {
            PubRcode::NoError => ResponseCode::NoError,
            PubRcode::NxDomain => ResponseCode::NXDomain,
            PubRcode::Refused => ResponseCode::Refused,
        };
        let Some(zone) = answer.zone.and_then(|i| t.zones.get(i)) else {
            return Ok(Reply { code, authoritative: false, answers: vec![], authority: vec![], additionals: vec![] });
        };
        let serial = compiled.serial;
        Ok(Reply {
            code,
            authoritative: true,
            answers: public_records(zone, serial, &answer.answers),
            authority: if answer.soa_in_authority { public_soa(zone, serial).into_iter().collect() } else { vec![] },
            additionals: public_records(zone, serial, &answer.additionals),
        })
    }

    fn reply_internal(&self, request: &Request) -> Result<Reply, ResponseCode> {
        let (name, qtype) = question(request)?;
        let compiled = self.shared.current();
        let zone = Zone { domain: self.shared.domain.clone(), ttl: self.shared.dns_ttl, serial: compiled.serial };
        let answer: Answer = dns_answer::answer(&zone, &compiled.table, &name, self::qtype(qtype));
        let code = match answer.rcode {
            Rcode::NoError => ResponseCode::NoError,
            Rcode::NxDomain => ResponseCode::NXDomain,
            Rcode::Refused => ResponseCode::Refused,
        };
        Ok(Reply {
            code,
            authoritative: answer.authoritative,
            answers: records(&zone, &answer.answers),
            authority: if answer.soa_in_authority { soa(&zone).into_iter().collect() } else { vec![] },
            additionals: records(&zone, &answer.additionals),
        })
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let stats = &self.shared.stats;
        inc(&stats.dns_queries);
        let edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        // Authoritative only: never offers recursion.
        metadata.recursion_available = false;
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let reply = if self.public { self.reply_public(request) } else { self.reply_internal(request) };
        let code = match &reply {
            Ok(r) => r.code,
            Err(code) => *code,
        };
        if code == ResponseCode::Refused {
            inc(&stats.dns_refused);
        } else if code == ResponseCode::NXDomain {
            inc(&stats.dns_nxdomain);
        }
        metadata.response_code = code;
        let result = match reply {
            Err(_) => response_handle.send_response(builder.build_no_records(metadata)).await,
            Ok(r) => {
                metadata.authoritative = r.authoritative;
                let response = builder.build(
                    metadata,
                    r.answers.iter(),
                    std::iter::empty(),
                    r.authority.iter(),
                    r.additionals.iter(),
                );
                response_handle.send_response(response).await
            }
        };
        match result {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "dns: cannot send response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}
