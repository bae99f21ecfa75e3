"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never a mix.

    write(path, fill)        fill(f) writes the whole content to the open binary file f

The content goes to a temporary file ".<name>.<random>.tmp" in the target's directory, which
is flushed, fsynced, given the permissions the target would have (those of the file it
replaces, else 0o666 & ~umask, as open() would give) and renamed over the target; then the
directory is fsynced where the OS allows, so that the rename itself is durable. If anything
fails (an exception, or a KeyboardInterrupt) the temporary file is removed and the target is
left as it was. Only a process killed mid-write can leave a temporary file behind.
"""
import errno
import os
import tempfile


def write(path, fill, what="the file"):
    """Write path atomically with fill(f) (see the module docstring). what names the content
    in the message if path's directory does not exist."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"cannot save {what}: directory "
                                              f"{directory!r} does not exist", path)
    mode = new_file_mode(path)
    tmp = tempfile.NamedTemporaryFile(dir=directory, prefix=f".{os.path.basename(path)[:100]}.",
                                      suffix=".tmp", delete=False)
    try:
        with tmp:
            fill(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, mode)
        os.replace(tmp.name, path)
    except BaseException:
        try:
            os.unlink(tmp.name)
        except OSError:
            pass
        raise
    fsync_directory(directory)


def new_file_mode(path):
    """Permissions for the new file: those of the file it replaces, else 0o666 & ~umask
    (what open() would give; NamedTemporaryFile creates files 0o600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    umask = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError):
        pass
    if umask is None:                 # racy with other threads, hence the last resort
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def fsync_directory(directory):
    """Make a rename in directory durable. Not possible on every OS/filesystem: best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
