"""Training, distillation, evaluation and the demo, for compiled specs."""
