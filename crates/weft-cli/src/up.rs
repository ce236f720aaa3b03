//! `weft up`: a whole cluster on this machine. It starts a controller and N
//! node agents as separate OS processes, all on loopback, and deploys the
//! demo app. Ctrl-C stops all of it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use weft_fabric::session::DEFAULT_ENDPOINT;

use crate::cluster::{self, ClientArgs};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// How many node agents to start (the last one is a "cloud" node).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// The controller's endpoint; nodes and CLI commands connect here.
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    listen: String,
    /// Do not deploy the demo app.
    #[arg(long)]
    no_demo: bool,
    /// The app to deploy.
    #[arg(long, default_value = "examples/cluster-cell.toml")]
    app: PathBuf,
    /// Where state and logs go (default: a fresh temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The children, stopped with SIGINT (and reaped) when dropped.
struct Cluster {
    children: Vec<(String, Child)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &self.children {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        for (name, child) in &mut self.children {
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("{name} did not stop in time; killing it");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// A TCP port on loopback that nothing listens on right now.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(name: &str, args: &[String], logs: &Path) -> Result<Child> {
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {name}"))
}

/// The names and arguments of the nodes of an N-node cluster: edge nodes
/// with the simulated plant, and one cloud node.
fn node_roles(n: usize) -> Vec<(String, Vec<String>)> {
    (0..n)
        .map(|i| {
            if i + 1 == n && n > 1 {
                (
                    "cloud-1".to_string(),
                    vec!["--labels".into(), "tier=cloud".into()],
                )
            } else {
                let name = format!("edge-{}", i + 1);
                (
                    name,
                    vec![
                        "--labels".into(),
                        "tier=edge,zone=line-1".into(),
                        "--device".into(),
                        "plant".into(),
                    ],
                )
            }
        })
        .collect()
}

pub async fn up(args: UpArgs) -> Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("weft-up-{}", std::process::id())),
    };
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut cluster = Cluster {
        children: Vec::new(),
    };
    let controller_args = vec![
        "controller".to_string(),
        "--listen".into(),
        args.listen.clone(),
        "--data-dir".into(),
        data_dir.join("controller").display().to_string(),
    ];
    cluster.children.push((
        "controller".into(),
        spawn("controller", &controller_args, &logs)?,
    ));
    for (name, extra) in node_roles(args.nodes) {
        let mut node_args = vec![
            "node".to_string(),
            "--name".into(),
            name.clone(),
            "--listen".into(),
            format!("tcp/127.0.0.1:{}", free_port()?),
            "--connect".into(),
            args.listen.clone(),
            "--data-dir".into(),
            data_dir.join(&name).display().to_string(),
        ];
        node_args.extend(extra);
        cluster
            .children
            .push((name.clone(), spawn(&name, &node_args, &logs)?));
    }
    let client = ClientArgs {
        cluster: "default".into(),
        connect: args.listen.clone(),
        json: false,
    };
    eprintln!(
        "starting a controller and {} nodes (logs in {})…",
        args.nodes,
        logs.display()
    );
    wait_for_nodes(&client, args.nodes, &mut cluster).await?;
    if !args.no_demo {
        if !args.app.is_file() {
            bail!(
                "{} not found: run `weft up` from the repository root, or pass --app or --no-demo",
                args.app.display()
            );
        }
        cluster::deploy(client.clone(), args.app.clone()).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    print!(
        "{}",
        cluster::nodes_table(&cluster::fetch_nodes(&client).await?)
    );
    println!();
    print!("{}", cluster::ps_table(&cluster::fetch_ps(&client).await?));
    println!(
        "\nThe cluster is up at {}. In another terminal:\n  weft ps            # where every process runs, its ticks and output hash\n  weft nodes         # the nodes, their pids and labels\n  weft logs cluster-cell/analytics\n  weft migrate cluster-cell/pid --to edge-3   # a live move: no missed tick\n  kill -9 <pid of pid's node>   # its hot standby takes over\nCtrl-C here stops everything.",
        args.listen
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping…");
    drop(cluster);
    Ok(())
}

async fn wait_for_nodes(client: &ClientArgs, n: usize, cluster: &mut Cluster) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        for (name, child) in &mut cluster.children {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited during start-up ({status}); see its log");
            }
        }
        if let Ok(nodes) = cluster::fetch_nodes(client).await
            && nodes.iter().filter(|n| n.state == "alive").count() >= n
        {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("the nodes did not all join within a minute; see the logs");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
