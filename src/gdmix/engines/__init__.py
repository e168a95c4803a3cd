"""Ways to run gdmix solvers: in memory, streamed from bucket files on disk."""
