//! `launcher`: sizes WEB_CONCURRENCY from the machine's real size and explains every number.

mod build_report;
mod dynos;
mod env;
mod exec_d;
mod files;
mod hint;
mod host;
mod pinning;
mod procs;
mod profile;
mod report;
mod servers;
mod settings;
mod sizing;
mod state;
mod supervisor;
mod text;
mod threads;
mod units;
mod usage;
mod web;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use env::Env;
use report::Report;

#[derive(Parser)]
#[command(
    name = "launcher",
    version,
    about = "Runs web apps with the right concurrency"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the machine's memory and CPUs, where each was read, and the WEB_CONCURRENCY chosen.
    Size {
        /// Read /proc and /sys under this directory instead of / (a captured host snapshot).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// The app's root, where launcher.toml is looked for (default: the current directory).
        #[arg(long)]
        app_dir: Option<PathBuf>,
    },
    /// Print the `export` lines the .profile.d script applies at dyno boot.
    Profile {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long)]
        app_dir: Option<PathBuf>,
        /// Print the .profile.d script that applies these lines, instead of the lines.
        #[arg(long)]
        script: bool,
    },
    /// Print the build log's sizing step: WEB_CONCURRENCY per dyno size, and warnings when the
    /// app pins its worker count. Used by bin/compile.
    BuildReport {
        /// The app being built (BUILD_DIR).
        #[arg(long)]
        app_dir: PathBuf,
        /// Heroku's ENV_DIR (or a CNB platform's `<platform>/env`): one file per config var.
        #[arg(long)]
        env_dir: Option<PathBuf>,
        /// classic: bin/compile's log, Cedar's sizes; cnb: bin/build's log in the style of
        /// Heroku's Cloud Native Buildpacks, Fir's sizes next to Cedar's.
        #[arg(long, value_parser = ["classic", "cnb"], default_value = "classic")]
        style: String,
    },
    /// Run the app under the pre-fork supervisor: one socket on $PORT, WEB_CONCURRENCY workers,
    /// restarts, graceful shutdown. Example: launcher run -- gunicorn app:app
    Run {
        #[arg(long, value_parser = servers::ModeChoice::WORDS, help = servers::ModeChoice::help())]
        mode: Option<String>,
        /// The app's root, where launcher.toml is looked for (default: the current directory).
        #[arg(long)]
        app_dir: Option<PathBuf>,
        /// The command and its arguments, after `--`.
        #[arg(last = true)]
        command: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    // The CNB lifecycle runs exec.d programs with no arguments: the name is the command.
    if exec_d::invoked_as(std::env::args_os().next().as_deref()) {
        return exec_d::run();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    if let Command::Run {
        mode,
        app_dir,
        command,
    } = cli.command
    {
        return run_supervisor(mode, app_dir, command);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("launcher: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// clap's message and exit status (0 for --help and --version), with a hint for `launcher run`
/// missing its `--`.
fn usage_error(err: clap::Error) -> ExitCode {
    let hint = match err.kind() {
        clap::error::ErrorKind::UnknownArgument => {
            hint::missing_dashes(&std::env::args_os().collect::<Vec<_>>())
        }
        _ => None,
    };
    let Some(hint) = hint else { err.exit() };
    let _ = err.print();
    eprintln!("{hint}");
    ExitCode::from(2)
}

fn run(cli: Cli) -> Result<()> {
    let env = Env::from_process();
    match cli.command {
        Command::Size {
            root,
            json,
            app_dir,
        } => {
            let mut report = Report::for_size(&root, &env, app_dir);
            if root == Path::new("/") {
                read_running(&mut report);
            }
            let text = if json {
                report.to_json() + "\n"
            } else {
                report.to_text()
            };
            write_stdout(&text)
        }
        Command::Profile { script: true, .. } => write_stdout(profile::SCRIPT),
        Command::BuildReport {
            app_dir,
            env_dir,
            style,
        } => {
            let style = build_report::Style::parse(&style).unwrap_or(build_report::Style::Classic);
            build_report::print(&app_dir, env_dir.as_deref(), style)
        }
        Command::Profile { root, app_dir, .. } => {
            let report = Report::for_app(&root, &env, app_dir);
            profile::log(&report, &env);
            write_stdout(&profile::render(&profile::exports(&report)))
        }
        Command::Run { .. } => unreachable!("handled in main"),
    }
}

fn run_supervisor(
    mode: Option<String>,
    app_dir: Option<PathBuf>,
    command: Vec<OsString>,
) -> ExitCode {
    if command.is_empty() {
        eprintln!("launcher: error: no command given; use: launcher run -- CMD ARGS..., e.g. launcher run -- gunicorn app:app");
        return ExitCode::from(2);
    }
    let request = supervisor::Request {
        mode: mode.as_deref().and_then(servers::ModeChoice::parse),
        app_dir,
        command,
    };
    match supervisor::run(request) {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            eprintln!("launcher: error: {}", fatal.message);
            ExitCode::from(fatal.exit_code)
        }
    }
}

/// What the `launcher run` supervisors of this user in this container measured, from their state
/// files; why they could not be read goes into the notes.
fn read_running(report: &mut Report) {
    let uid = nix::unistd::geteuid().as_raw();
    let place = state::place(std::env::var_os("TMPDIR").as_deref(), uid);
    report.running_notes.extend(place.note);
    match state::read_live(&place.dir, uid, &state::Scope::own(&host::Snapshot::live())) {
        Ok(states) => report.running = states,
        Err(why) => report
            .running_notes
            .push(format!("the supervisors' state files were not read: {why}")),
    }
}

fn write_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}
