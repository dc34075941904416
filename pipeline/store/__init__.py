"""The run folder (`RunFolder`): its shards, manifest and remote mirror, and the strict input readers and atomic
output writers every command uses."""
