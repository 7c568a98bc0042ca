"""Fine-tuning the critique-and-revise model: `refine train`, `evaluate-model` and `sweep`."""
