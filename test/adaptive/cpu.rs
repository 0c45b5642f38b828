//! CPU-bound apps: no growth past the CPUs, on an idle machine or a busy one.

use super::*;

#[test]
fn a_cpu_bound_app_does_not_grow_past_its_cpus() {
    cpu_bound("launcher-test-adaptive-cpu", 0);
}

#[test]
fn a_cpu_bound_app_on_a_busy_machine_does_not_grow_either() {
    // Other processes take most of the CPUs: the dyno uses a fraction of its own, and its
    // workers wait for the rest. More workers would only wait too.
    cpu_bound("launcher-test-adaptive-cpu-busy", cpu_cap() - 1);
}

/// Spinning processes outside the dyno, killed when dropped.
struct Spinners(Vec<std::process::Child>);

impl Drop for Spinners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// 64 clients on the CPU-bound endpoint for 20 s, with `spinners` processes spinning outside
/// the dyno's cgroups: never more workers than 2*cpus+1.
fn cpu_bound(name: &str, spinners: usize) {
    needs_machine(|| {
        let _serial = serial();
        let (served, master) = gunicorn(name, &[], &[], STATIC)?;
        let Served { run, port, cgroup } = &served;
        let spin = (0..spinners).map(|_| {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .map_err(|e| format!("sh: {e}"))
        });
        let spinning = Spinners(spin.collect::<Result<_, _>>()?);
        let load = Load::on(*port, CLIENTS, "/cpu", secs(60));
        let begun = Instant::now();
        let mut most = 0;
        while begun.elapsed() < secs(20) {
            most = most.max(children(master).len());
            std::thread::sleep(Duration::from_millis(200));
        }
        let tally = load.finish();
        drop(spinning);
        let log = run.log();
        assert!(
            most <= cpu_cap(),
            "{most} workers for {} CPUs\n{log}",
            cpu_cap()
        );
        let resizes = run.events("resize");
        assert!(
            resizes.iter().all(|e| e.num::<usize>("to") <= cpu_cap()),
            "{log}"
        );
        // The queue asked for more, the CPUs were busy: this is the case the rule is for.
        let samples = run.events("sample");
        let late = &samples[samples.len().saturating_sub(10)..];
        assert!(
            late.iter()
                .any(|s| s.num::<u32>("sample#listen_queue_max") > 0),
            "{log}"
        );
        let busy = late
            .iter()
            .map(|s| s.num::<f64>("sample#cpu_busy"))
            .fold(0.0, f64::max);
        if spinners == 0 {
            assert!(
                busy > 0.4,
                "the app never kept its CPUs busy ({busy})\n{log}"
            );
        }
        assert!(tally.failures.is_empty(), "{tally:?}");
        assert!(tally.ok > 200, "{tally:?}");
        assert_eq!(cgroup.oom_kills(), 0, "{log}");
        Ok(())
    });
}
