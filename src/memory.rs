//! Giving freed memory back to the operating system. glibc keeps what the program frees in
//! its arenas for reuse, so a burst (the configuration parser at start-up, a crowd of large
//! answers) would otherwise leave the resident size at its peak for good.

/// Returns the allocator's free memory to the OS (`malloc_trim`); a no-op elsewhere than
/// glibc. It walks the allocator's free lists: call it off the request path.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
