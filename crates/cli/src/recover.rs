//! `holdfast cluster recover`: confirmation and output around
//! `holdfast_node::recover` (which does the work, offline).
use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::Global;

pub fn run(g: &Global, yes: bool) -> Result<ExitCode> {
    let dir = g.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    let plan = holdfast_node::recover::plan(&dir)?;
    if !yes {
        eprintln!(
            "This makes node {} ({}) the ONLY voter of the control plane, from its state at revision {}.\n\
             Use it only when a majority of the voters is gone for good. Changes only the lost voters\n\
             had are lost. The other nodes ({}) stay members; remove dead ones with `holdfast node rm`.\n\
             Never run it on two nodes of the same cluster.",
            plan.name,
            plan.addr,
            plan.revision,
            if plan.others.is_empty() { "none".to_string() } else { plan.others.join(", ") }
        );
        eprint!("Type the node's name ({}) to go on: ", plan.name);
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != plan.name {
            bail!("not confirmed; nothing was changed");
        }
    }
    let old = holdfast_node::recover::recover(&dir, &plan)?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({ "node": plan.name, "id": plan.node_id, "replaced_voters": old, "revision": plan.revision })
        );
    } else {
        println!(
            "node {} is now the only voter (replaced voters: {}). Start it again (`holdfast up --data-dir {}`); it leads alone, and the other nodes rejoin as learners when they come back.",
            plan.name,
            old.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
