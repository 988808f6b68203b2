//! `sluice bench`: parses the command line into [`sluice::bench::BenchOptions`], runs it on a
//! runtime of its own, prints the table and writes the JSON and HTML reports.

use std::path::PathBuf;

use sluice::bench::candidate::Candidate;
use sluice::bench::workload::Workload;
use sluice::config::Config;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The gateway configuration: its backends, users and policy directory (whose router the
    /// strategies are set on).
    #[arg(long, default_value = "config/sluice.toml")]
    config: PathBuf,
    /// The workload (TOML; `benches/workloads/` has examples).
    #[arg(long)]
    workload: PathBuf,
    /// Strategies of the configured router to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "round-robin,least-in-use,p2c,peak-ewma,c3,adaptive"
    )]
    strategies: Vec<String>,
    /// A router component of one's own, as NAME=FILE.wasm (repeatable); compared after the
    /// strategies. Its settings: the next --router-settings.
    #[arg(long)]
    router: Vec<String>,
    /// Settings for the --router of the same position, as inline TOML (`strategy = "c3"`).
    #[arg(long)]
    router_settings: Vec<String>,
    /// Rounds: every candidate runs once per round, interleaved.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// The account the bench's clients log in with (default: the configuration's first user).
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the self-contained HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config =
        Config::load(&args.config).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let workload = Workload::load(&args.workload)?;
    let candidates = Candidate::from_args(&args.strategies, &args.router, &args.router_settings)?;
    let first = config.users.first();
    let user = args
        .user
        .or_else(|| first.map(|u| u.name.clone()))
        .ok_or_else(|| anyhow::anyhow!("--user: the configuration has no users"))?;
    let password = args
        .password
        .or_else(|| {
            first
                .filter(|u| u.name == user)
                .and_then(|u| u.password.clone())
        })
        .ok_or_else(|| {
            anyhow::anyhow!("--password: no password for {user} in the configuration")
        })?;
    let opts = sluice::bench::BenchOptions {
        config,
        workload,
        candidates,
        repeat: args.repeat,
        user,
        password,
        progress: sluice::bench::stderr_is_terminal(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(sluice::bench::run(opts))?;
    println!("{}", report.table());
    super::write_reports(args.json.as_deref(), &report, args.html.as_deref(), || {
        sluice::bench::html::render(&report)
    })
}
