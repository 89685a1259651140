"""Draws docs/bench-growth.png from docs/bench-growth.csv (written by the benchmark): push time against
image size for the step, docker push and skopeo. Run by scripts/bench with matplotlib from PyPI."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

source, target = sys.argv[1], sys.argv[2]
with open(source) as f:
    rows = list(csv.DictReader(f))
sizes = [float(r["size_mb"]) for r in rows]
fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
for column, label, marker in [
    ("step_s", "ecr-step (own transfer, from the engine)", "o"),
    ("docker_push_s", "docker push", "s"),
    ("skopeo_s", "skopeo copy docker-daemon:", "^"),
]:
    ax.plot(sizes, [float(r[column]) for r in rows], marker=marker, label=label)
ax.set_xlabel("image size (MB of real files, one layer)")
ax.set_ylabel("push time (s)")
ax.set_title("Push of a new image, one run per size, 2 cores, loopback registry")
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(target)
print(f"plot-growth: {target}")
