"""`make bench`: load scenarios against real server processes, each reported as a ratio to a
ceiling measured on the same machine in the same run (numbers on a shared box drift; ratios
drift less). See docs/performance.md for the latest full run."""
