//! Small operating-system helpers shared by the server and `sse-load`.

/// The process's open-file limit (soft), after raising it to the hard limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Ignores `SIGXFSZ`, so a file-size limit (`ulimit -f`, `prlimit --fsize`) reached while
/// writing the local log fails that write (`EFBIG`, a refused publish) instead of killing
/// the process, as it does by default.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a standard signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
