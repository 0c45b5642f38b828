"""Draws test/bench/adaptive's step load: the JSON of its runs on stdin, the PNG's path as the
argument. Workers, the accept queue and the requests/s served over time, static next to adaptive,
the burst shaded. Needs matplotlib (see test/bench/adaptive)."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

steps = json.load(sys.stdin)
figure, panels = plt.subplots(3, 1, sharex=True, figsize=(9, 7.5))
for step, colour in zip(steps, ["tab:grey", "tab:blue"]):
    t = [s["t"] for s in step["samples"]]
    for panel, key in zip(panels, ["workers", "queue", "rps"]):
        panel.plot(t, [s[key] for s in step["samples"]], colour, label=step["sizing"], linewidth=1.4)
start, end = steps[0]["burst"]
for panel, label in zip(panels, ["gunicorn workers", "accept queue (peak per s)", "requests/s served"]):
    panel.axvspan(start, end, color="tab:orange", alpha=0.12, linewidth=0)
    panel.set_ylabel(label)
    panel.grid(alpha=0.3)
panels[0].legend(loc="upper right")
cpus, clients = steps[0]["cpus"], steps[0]["clients"]
panels[0].set_title(
    f"Step load on a 50 ms I/O-bound endpoint: idle, {clients} clients (shaded), idle; 512 MB, {cpus} CPUs"
)
panels[-1].set_xlabel("seconds")
figure.tight_layout()
figure.savefig(sys.argv[1], dpi=110)
