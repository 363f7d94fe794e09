//! Connection URLs of a database's endpoints (pure): what `{ url: db }` in a service's
//! env becomes, and what `holdfast db url` prints.
use holdfast_spec::DbEndpoint;
use holdfast_state::model::DatabaseRecord;

/// `postgresql://user:password@<endpoint address>:5432/<first database>`; `user` defaults
/// to the first user. `None` when the user is not one of the database's.
pub fn url(record: &DatabaseRecord, endpoint: DbEndpoint, user: Option<&str>) -> Option<String> {
    let user = match user {
        Some(u) => u,
        None => record.spec.users.first()?.as_str(),
    };
    let password = record.credentials.users.get(user)?;
    let database = record.spec.databases.first().map(String::as_str).unwrap_or("postgres");
    Some(format!(
        "postgresql://{user}:{password}@{}:{}/{database}",
        record.addresses.get(endpoint),
        holdfast_postgres::POSTGRES_PORT
    ))
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
        let rw = url(rec, DbEndpoint::Rw, None).expect("url");
        let pw = &rec.credentials.users["app"];
        assert_eq!(rw, format!("postgresql://app:{pw}@{}:5432/app", rec.addresses.rw));
        let ro = url(rec, DbEndpoint::Ro, Some("ro_user")).expect("url");
        assert!(ro.starts_with("postgresql://ro_user:") && ro.contains(&rec.addresses.ro.to_string()), "{ro}");
        assert_eq!(url(rec, DbEndpoint::Rw, Some("nobody")), None);
    }
}
