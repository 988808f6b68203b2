//! `sluice simulate`: reads a scenario, runs it once per candidate router (strategies of the
//! router in the policy directory, or routers of one's own), prints the table and writes the
//! JSON and HTML reports.

use std::io::Write as _;
use std::path::PathBuf;

use sluice::bench::candidate::Candidate;
use sluice::sim::experiment::{self, Progress};
use sluice::sim::scenario::Scenario;

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// The scenario (TOML; `benches/scenarios/` has examples).
    scenario: PathBuf,
    /// The policy directory whose router the strategies are set on.
    #[arg(long, default_value = "policies")]
    policies: PathBuf,
    /// Strategies to compare, comma-separated (default: the scenario's `strategies`, else six).
    #[arg(long, value_delimiter = ',')]
    strategies: Vec<String>,
    /// A router component of one's own, as NAME=FILE.wasm (repeatable); its settings: the next
    /// --router-settings.
    #[arg(long)]
    router: Vec<String>,
    /// Settings for the --router of the same position, as inline TOML (`strategy = "c3"`).
    #[arg(long)]
    router_settings: Vec<String>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the scenario's number of requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the self-contained HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    if let Some(n) = args.requests {
        scenario.requests = n.max(1000);
    }
    let strategies: Vec<String> = if !args.strategies.is_empty() {
        args.strategies
    } else if !scenario.strategies.is_empty() {
        scenario.strategies.clone()
    } else if args.router.is_empty() {
        sluice::bench::DEFAULT_STRATEGIES.map(String::from).to_vec()
    } else {
        Vec::new()
    };
    let candidates = Candidate::from_args(&strategies, &args.router, &args.router_settings)?;
    let mut progress = |p: Progress<'_>| match p {
        Progress::Starting {
            candidate,
            index,
            of,
        } => {
            eprint!("[{}/{of}] {candidate} ... ", index + 1);
            let _ = std::io::stderr().flush();
        }
        Progress::Done(run) => eprintln!(
            "{} requests in {:.1} s, p99 {:.1} ms",
            run.requests, run.wall_secs, run.whole.p99.ms
        ),
    };
    let report = experiment::run(&scenario, &args.policies, &candidates, &mut progress)?;
    println!("{}", report.table());
    super::write_reports(args.json.as_deref(), &report, args.html.as_deref(), || {
        report.html()
    })
}
