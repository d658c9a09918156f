"""Training machinery shared by every train.py: arguments, distributed set-up, data loading,
the train/eval loop, checkpoints and logging. Written once; the per-dataset scripts only say
what differs (their dataset, transforms, recipe defaults and flag spellings)."""
