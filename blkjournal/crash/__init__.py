"""The crash harness: record block writes (dm-log-writes format), enumerate crash states, replay.

logwrites  the log format, read and written byte for byte
recorder   a recording BlockDevice with the kernel target's ordering, plus the roles sidecar
states     every legal crash state at every crash point, deduplicated, with coverage
image      overlays: crash states as BlockDevices over a shared base image
cli        `log show` and `replay`
"""
