"""The parts of bench/memory_throughput.py (the entry script: command line and the run flow).

- workload.py: modes, default plan and models, fit grids, workload numbers, the run's training config
- worker.py: everything that runs inside the fresh worker process (`--worker SPEC`)
- orchestrator.py: device probe, models and data, launching a worker, the per-run figures, skip reasons
- fit_scan.py: the largest G / completion length that fit each memory cap
- report.py: targets, Markdown tables, plots, the README section
"""
