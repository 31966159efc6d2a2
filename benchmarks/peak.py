"""Peak memory of the calling process."""


def peak_rss_mb() -> float:
    """This process's own peak RSS (``VmHWM``). ``ru_maxrss`` would not do in a child started by
    ``subprocess``: Linux carries the parent's peak across ``exec``, so a small child reports its
    parent's peak."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
