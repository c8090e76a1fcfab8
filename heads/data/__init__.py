"""Stage-2 data: label files of every task, prediction files, loading cached features onto the device, windows."""
