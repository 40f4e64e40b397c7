"""The built-in synthetic summarisation task, whose gold reward is a program.

  gold       the words, the gold reward program, the Bradley-Terry rater
  generator  contexts, the policies that write summaries, SFT and comparison data, the splits
             gin binds (`SyntheticDataset`)
  task       the task through the experiment's `Task` interface (`SyntheticTask`)

Every example is generated deterministically from `(seed, split, index)`, so any slice of any
split can be regenerated anywhere (no files, no TensorFlow, no seqio: numpy only, and
`sentencepiece` for its vocabulary). `seqio_tasks.py` wraps it as seqio tasks.

The task
  A context is 20-32 lowercase words (by default): filler words (`FILLER_WORDS`) with 2-4
  distinct entity words (`ENTITY_WORDS`) mixed in, each mentioned 1-2 times. The entities of a
  context are its *salient* words. The policy sees the prompt `summarize: {context}` and should
  answer with a summary that names every salient word once, e.g. (shortened)

    context:   "the owl and a near the fox of owl with then"
    reference: "owl fox"       (salient words in order of first mention)

Gold reward (`gold.gold_reward(context, summary)`), exactly
  The summary is split on whitespace into words w_1 .. w_m; words are compared exactly
  (case-sensitive). Going left to right, each word scores
    +1.0  if it is a salient word of the context not named earlier in the summary (coverage);
    -0.5  if it already occurred earlier in the summary (redundancy);
    -0.5  if it is a non-salient word of the context, i.e. a filler word (concision);
    -1.0  otherwise: a word not in the context (hallucination).
  The empty summary scores 0. The maximum, `max_gold_reward(context)`, is the number of
  salient words, reached exactly by summaries that name each salient word once and nothing
  else (in any order); `reference_summary` names them in order of first mention.

Policies (how summaries are sampled; `generator.sample_summary`)
  clean      the reference summary.
  reference  the noisy reference policy that writes the SFT targets: walking the reference
             summary, each salient word is dropped with `drop_probability`; a kept word is
             followed by a repeat of itself with `repeat_probability`, by a filler word of the
             context with `filler_probability` and by an entity absent from the context with
             `hallucination_probability` (`SyntheticTaskConfig.reference_noise`). If every word
             was dropped the first salient word is kept; the result is cut to
             `max_summary_words`.
  sloppy     the same program with higher noise (`SyntheticTaskConfig.sloppy_noise`).
  random     1-5 words drawn uniformly, with replacement, from the context.
  looping    the degenerate output of an over-optimised policy: a reference-policy summary
             whose last word is repeated until the summary is `max_summary_words` long. Not in
             the default comparison mix; the demo adds it so that its ranker sees repetition.

Preference pairs (`generator.preference_examples`) pair two different summaries of one context from two
policies drawn from `policy_weights`, and label them the way human raters disagree: the first
is preferred with the Bradley-Terry probability

    P(first ≻ second) = σ((r(first) - r(second)) / label_temperature)

under the gold reward r (`label_temperature` = 0: always the higher reward, ties by a fair
coin). The expected agreement of the labels with the gold reward on a pair whose rewards differ
by Δ is therefore σ(|Δ| / label_temperature).

Data and vocabulary
  `sft_examples` / `preference_examples` give a split's SFT and comparison data as dicts
  ('inputs', 'targets' / 'chosen', 'rejected'); `SyntheticDataset` holds the split sizes and
  seed that gin/data/synthetic.gin binds. The vocabulary (`task.VOCABULARY_FILE`) is the
  256-piece SentencePiece model shipped in rso_jax/assets/ (built by
  scripts/make_synthetic_vocab.py): T5's pad 0 / eos 1 / unk 2, one piece per task word,
  single-token 'A' and 'B' for the ranker.
"""
