"""What an experiment reads: data files, the task interface, its implementations, the text codec.

  records       data files and their records (JSON lines or parquet), errors that say where
  summaries     Reddit TL;DR and CNN/DailyMail readers, with their input templates
  dialogues     Anthropic HH, WebGPT and OASST1 readers, with the dialogue template
  readers       the datasets by name (`DATASETS`), their files from gin, `read_split`
  task          the task interface every stage asks for its data
  synthetic/    the built-in synthetic task: its gold program, its data, the task
  file_tasks    the public datasets as tasks, read through `readers`
  seqio_task    registered seqio tasks as a task, named in gin (imports seqio when built)
  text_codec    texts to token ids and back
"""
