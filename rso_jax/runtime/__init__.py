"""What every run stands on, whatever it runs: several processes, files that are never half
written, the record of what produced a result, stops and failures.

  processes       several JAX processes: who writes, barriers, gathering to every host
  atomic_io       writes under a temporary name, then renamed; leftovers removed
  file_checksums  the one SHA-256 record of files (DONE.json's and checkpoints')
  run_info        the operative gin config beside every result; benchmark lines
  run_log         the run's log file, with the tracebacks the console leaves out
  stop_signals    SIGTERM and Ctrl-C as a stop at the next safe point, agreed by every process
  failures        the stage and the OS error behind a failure, in one line
  cpu_tuning      the XLA:CPU flag the entry point and benchmarks set
"""
