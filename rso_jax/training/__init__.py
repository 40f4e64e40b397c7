"""Training: the losses, the optimizers, the pure train steps and the loop around them.

  losses                sigmoid-norm, hinge, hinge-norm, SLiC, IPO, conservative sigmoid-norm,
                        token cross-entropy (pure functions of arrays)
  optimizers            Adafactor (T5X's) and Adam with warm-up and cosine decay
  train_steps           the train state; losses of parameters on a batch; the jitted, sharded,
                        donated train step with gradient accumulation
  train_loop            the loop: resume, save, evaluate, keep the best; stops at a safe point
  checkpoint_resume     the newest usable checkpoint restored, unusable ones set aside
  checkpoint_checksums  checksums.json written with each checkpoint, checked before a restore
"""
