"""Responses from a policy, and a policy's log-likelihood of given responses.

  decoding  N candidates per prompt (temperature, top-k, top-p, greedy): the encoder once per
            prompt, a static KV cache in a `lax.while_loop`
  scoring   teacher-forced per-token and per-sequence log-likelihoods (the one token log-prob)
"""
