"""`make bench`: blkjournal's figures, measured side by side with their baselines in one run.

Every figure is a min/median/max over repeated rounds; inside a round each workload runs once, in
an order rotated from round to round, so machine noise (this is a shared, noisy host) falls on
the figure and its baseline alike.  Ratios are taken per round and then summarised: they are the
claim, the absolute numbers are not.

    env.py        fio (apt-get, idempotent), loop devices with direct I/O, /sys/block stats, ext4
    measure.py    the timed workloads: store, raw O_DIRECT, ext4 + fsync, fio
    crashrate.py  crash states checked per second (the explorer, 1 and 2 jobs)
    stats.py      min/median/max, per-round ratios
    report.py     bench/results.json, bench/results.md, the targets and their verdicts
    run.py        the rounds, in order; `python -m bench.run --help`
"""
