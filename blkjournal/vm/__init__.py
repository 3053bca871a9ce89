"""The qemu guest that runs dm-log-writes and dm-flakey (the host kernel has no device-mapper).

Host side: `blkjournal.vm.qemu.run_scenario` / `run_guest` / `Disk`; guest side:
`blkjournal.vm.guest` (scenario registry) and `blkjournal.vm.dm`. See README.md here.
"""
