"""/dev/sev: the PSP driver's device node (drivers/crypto/ccp/sev-dev.c), as far as KVM needs it.

KVM's SNP commands name the PSP by an fd (``kvm_sev_cmd.sev_fd``):
``sev_issue_cmd_external_user()`` takes the file of that fd and refuses it with EBADF when
the fd is not open or is not /dev/sev (``file->f_op != &sev_fops``). ``is_sev_file`` is that
check. The device's own ioctl answers as ``sev_ioctl`` does for what it checks before the
firmware: a request other than SEV_ISSUE_CMD is EINVAL, an unreadable argument EFAULT, a
command id >= SEV_MAX EINVAL. The platform-management commands themselves (PLATFORM_STATUS,
PEK_GEN ...) are not modelled: EOPNOTSUPP (kmock's choice, docs/arch/snp.md).
"""

import errno
import stat

from kmock.errors import oserror
from kmock.file import File
from kmock.kernel_util import copy_from_user
from kmock.uapi import sev as S


class SevFile(File):
    """An open /dev/sev (drivers/crypto/ccp/sev-dev.c, a misc character device)."""

    file_type = "sev"
    i_mode = stat.S_IFCHR | stat.S_IRUSR | stat.S_IWUSR

    def unknown_ioctl(self, request, arg):
        if request != S.SEV_ISSUE_CMD:
            raise oserror(errno.EINVAL)
        cmd = copy_from_user(arg, S.sev_issue_cmd)
        if cmd.cmd >= S.SEV_MAX:
            raise oserror(errno.EINVAL)
        raise oserror(errno.EOPNOTSUPP)


def open_sev(kernel, flags):
    return SevFile(kernel)


def is_sev_file(kernel, fd):
    """Whether ``fd`` is an open /dev/sev of this kernel (sev_issue_cmd_external_user)."""
    return isinstance(kernel.fdtable.get(fd), SevFile)
