"""The benchmark: every route this PC can run, measured the same way (`phi3-aipc bench`).

For each (route, precision, device) a fresh worker process prepares the model, loads it twice
(cold: first load in the process; warm: a second load), then for each prompt length runs one
warm-up and `reps` timed generations of exactly `new_tokens` tokens (end-of-sequence ignored),
each on a different prompt. Medians and the min-max spread are reported.

    configs.py   what to measure, and the prompts
    run.py       one process per configuration, a progress bar, the report
    worker.py    the measuring process
    machine.py   the machine's description and memory bandwidth
    report.py    derived figures, ranking, table, CSV/JSON, plots
"""
from .configs import LENGTHS, BenchConfig, available_configs, load_prompts, too_big
from .machine import machine
from .report import fastest, plot, rows, summary, table, write
from .run import run

__all__ = ["LENGTHS", "BenchConfig", "available_configs", "load_prompts", "too_big", "machine",
           "run", "fastest", "plot", "rows", "summary", "table", "write"]
