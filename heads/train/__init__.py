"""Training: the trainer, self-supervised pretraining, distillation teachers, plots, the demo's heads."""
