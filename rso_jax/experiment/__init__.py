"""The RSO experiment: its configuration, artifacts, stages, evaluation and runner.

  config      what an experiment is (bound in gin by gin/runs/rso.gin and configs/*.gin)
  artifacts   stage directories, DONE markers, arrays and parameters in the work directory
  inference   the jitted, mesh-sharded calls every inference stage makes
  stages/     one module per stage: sft, ranker, sample, score, select, reference,
              preference, evaluate
  runner      checks every input, installs given checkpoints, runs the stages in order
"""
