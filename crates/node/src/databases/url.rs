//! Connection URLs of a database's endpoints (pure): what `{ url: db }` in a service's
//! env becomes, and what `holdfast db url` prints.
use holdfast_spec::{DbEndpoint, DbEngine};
use holdfast_state::model::DatabaseRecord;

/// PostgreSQL: `postgresql://user:password@<endpoint address>:5432/<first database>`;
/// `user` defaults to the first user. Redis: `redis://default:password@<address>:6379`
/// (its `default` user, named: some clients send `AUTH "" password` for an empty one),
/// and for the `sentinel` endpoint `redis+sentinel://default:password@<address>:26379/<db>` (the path is the master name
/// Sentinel clients ask for). `None` when the user is not one of the database's, or the
/// database has no such endpoint.
pub fn url(name: &str, record: &DatabaseRecord, endpoint: DbEndpoint, user: Option<&str>) -> Option<String> {
    let engine = record.spec.engine;
    let address = record.addresses.get(endpoint).filter(|_| engine.endpoints().contains(&endpoint))?;
    let port = engine.port(endpoint);
    let user = match user {
        Some(u) => u,
        None => record.spec.users.first()?.as_str(),
    };
    let password = record.credentials.users.get(user)?;
    match engine {
        DbEngine::Postgres => {
            let database = record.spec.databases.first().map(String::as_str).unwrap_or("postgres");
            Some(format!("postgresql://{user}:{password}@{address}:{port}/{database}"))
        }
        DbEngine::Redis if endpoint == DbEndpoint::Sentinel => {
            Some(format!("redis+sentinel://{user}:{password}@{address}:{port}/{name}"))
        }
        DbEngine::Redis => Some(format!("redis://{user}:{password}@{address}:{port}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_endpoint_address_user_and_first_database() {
        let stack = holdfast_spec::parse_str(
            "t.yaml",
            "databases:\n  db:\n    engine: postgres\n    databases: [app, other]\n    users: [app, ro_user]\n",
        )
        .expect("spec");
        let mut s = holdfast_state::ClusterState::default();
        let mut node = holdfast_state::NodeRecord::new(
            1,
            "n1",
            "127.0.0.1:1",
            "a",
            "amd64",
            holdfast_placement::Capacity { cpu_millis: 4000, memory_bytes: 8 << 30 },
        );
        node.software.insert("postgres".into(), "15".into());
        s.apply(&holdfast_state::Request::new(holdfast_state::Command::UpsertNode(node)));
        let mut n = 0;
        let (_, desired) = holdfast_state::plan::plan_deploy_with(&s, &stack, &mut || {
            n += 1;
            format!("pw{n}")
        })
        .expect("plan");
        let rec = &desired.databases["db"];
        let rw = url("db", rec, DbEndpoint::Rw, None).expect("url");
        let pw = &rec.credentials.users["app"];
        assert_eq!(rw, format!("postgresql://app:{pw}@{}:5432/app", rec.addresses.rw));
        let ro = url("db", rec, DbEndpoint::Ro, Some("ro_user")).expect("url");
        assert!(ro.starts_with("postgresql://ro_user:") && ro.contains(&rec.addresses.ro.to_string()), "{ro}");
        assert_eq!(url("db", rec, DbEndpoint::Rw, Some("nobody")), None);
    }
}
