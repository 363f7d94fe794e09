//! The internal DNS server: hickory-server's UDP and TCP transport with our own request
//! handler, which asks the pure `dns_answer::answer` about the current table and turns the
//! result into wire records. Answers follow `NetHandle::update` at once: every query reads
//! the newest table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::UdpSocket;

use crate::dns_answer::{self, Answer, QType, Rcode, Zone};
use crate::error::NetError;
use crate::net::Shared;
use crate::proxy::bind_tcp;
use crate::stats::inc;

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

pub(crate) struct Handler {
    shared: Arc<Shared>,
}

/// Binds UDP and TCP on `addr` (with port 0: the same free port for both) and starts serving.
pub(crate) fn start(addr: SocketAddr, shared: Arc<Shared>) -> Result<(Server<Handler>, SocketAddr), NetError> {
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
    let mut server = Server::new(Handler { shared });
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

impl Handler {
    fn decide(&self, request: &Request) -> Result<(Zone, Answer), ResponseCode> {
        if request.metadata.message_type != MessageType::Query {
            return Err(ResponseCode::FormErr);
        }
        if request.metadata.op_code != OpCode::Query {
            return Err(ResponseCode::NotImp);
        }
        let info = request.request_info().map_err(|_| ResponseCode::FormErr)?;
        let compiled = self.shared.current();
        let zone = Zone { domain: self.shared.domain.clone(), ttl: self.shared.dns_ttl, serial: compiled.serial };
        if info.query.query_class() != DNSClass::IN {
            return Err(ResponseCode::Refused);
        }
        let name = info.query.name().to_string();
        let answer = dns_answer::answer(&zone, &compiled.table, &name, qtype(info.query.query_type()));
        Ok((zone, answer))
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
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let result = match self.decide(request) {
            Err(code) => {
                if code == ResponseCode::Refused {
                    inc(&stats.dns_refused);
                }
                metadata.response_code = code;
                response_handle.send_response(builder.build_no_records(metadata)).await
            }
            Ok((zone, answer)) => {
                metadata.authoritative = answer.authoritative;
                metadata.response_code = match answer.rcode {
                    Rcode::NoError => ResponseCode::NoError,
                    Rcode::NxDomain => {
                        inc(&stats.dns_nxdomain);
                        ResponseCode::NXDomain
                    }
                    Rcode::Refused => {
                        inc(&stats.dns_refused);
                        ResponseCode::Refused
                    }
                };
                let answers = records(&zone, &answer.answers);
                let additionals = records(&zone, &answer.additionals);
                let authority: Vec<Record> =
                    if answer.soa_in_authority { soa(&zone).into_iter().collect() } else { vec![] };
                let response =
                    builder.build(metadata, answers.iter(), std::iter::empty(), authority.iter(), additionals.iter());
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
