"""The infrastructure every layer stands on, none of it the method: rank primitives, code versions, progress
lines, the (seed, epoch) order, the Trainer builder and its workers, full-fp32 matmuls, the command-line override
rules, job folder names, the names a config may choose, and what cannot change a result."""
