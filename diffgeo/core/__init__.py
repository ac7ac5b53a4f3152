"""What every layer uses: argument checks, atomic result files, content-addressed sweeps."""

