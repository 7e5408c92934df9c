//! The panic hook the SDK installs in a plugin's own copy of std when the host loads the
//! library (from `export_plugin!`'s root module).
//!
//! std's default hook symbolizes a backtrace when `RUST_BACKTRACE` is set: it maps the
//! library's file to read its debug info and keeps that mapping in a static cache for the
//! life of the process, so a plugin that panicked once could never leave memory (its
//! retired generation was `pinned`). This hook prints what the default hook prints (thread,
//! location, message) to stderr, and with backtraces on, the frames *unresolved*: one
//! `<file>+0x<offset>` line per frame, from the return addresses alone (an unwind of the
//! stack, no symbol lookup) and `/proc/self/maps` read once per panic, so nothing is cached
//! and nothing stays mapped. `addr2line -Cfie <file> <offset>` symbolizes a line offline.
//!
//! `BKG_PLUGIN_SYMBOLIZE=1` in the host's environment hands the panic to std's own hook
//! instead (a symbolized backtrace; the library then stays mapped until the host exits).
//! A hook the plugin sets itself replaces this one (`std::panic::set_hook` is per copy of
//! std, so it concerns this plugin only); one that prints a `std::backtrace::Backtrace`
//! brings the pin back.

use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// Set (to anything but `0`) in the host's environment, std's own hook prints a plugin's
/// panics, with a symbolized backtrace, and the plugin's library stays mapped.
pub const SYMBOLIZE_ENV: &str = "BKG_PLUGIN_SYMBOLIZE";

/// Frames printed at most (a runaway recursion would otherwise print thousands).
const MAX_FRAMES: usize = 256;

static INSTALL: Once = Once::new();
static FIRST_PANIC: AtomicBool = AtomicBool::new(true);

/// Install the hook in this copy of std, once per load of the library (a hook the plugin
/// sets later replaces it).
pub fn install() {
    INSTALL.call_once(|| {
        // Not panicking here (the host is loading the library), so neither call panics.
        let std_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if env_on(SYMBOLIZE_ENV) {
                std_hook(info)
            } else {
                let text = report(info, backtraces_on(), &FIRST_PANIC);
                // Written at once, like std's hook; nothing to do if stderr is gone.
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
        }));
    });
}

/// Whether `name` is set to something other than `0` (std's reading of `RUST_BACKTRACE`).
fn env_on(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v != "0")
}

fn backtraces_on() -> bool {
    env_on("RUST_BACKTRACE")
}

/// What the hook prints for one panic.
fn report(info: &PanicHookInfo<'_>, backtrace: bool, first_panic: &AtomicBool) -> String {
    let mut out = String::new();
    let (name, tid) = this_thread();
    let tid = tid.map(|t| format!(" ({t})")).unwrap_or_default();
    let location = info.location().map(|l| l.to_string()).unwrap_or_else(|| "<unknown>".into());
    let message = info.payload_as_str().unwrap_or("Box<dyn Any>");
    let _ = writeln!(out, "\nthread '{name}'{tid} panicked at {location}:\n{message}");
    if backtrace {
        out.push_str(&unresolved_backtrace());
    } else if first_panic.swap(false, Ordering::Relaxed) {
        out.push_str(
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
        );
    }
    out
}

/// The thread's OS name and id, from `/proc/thread-self` (asking std for the current thread
/// would register a thread-local destructor in this copy of std on a host thread, which
/// keeps the library mapped until that thread ends).
fn this_thread() -> (String, Option<String>) {
    let name = std::fs::read_to_string("/proc/thread-self/comm")
        .map(|n| n.trim_end().to_string())
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "<unnamed>".into());
    // The link reads `<pid>/task/<tid>`.
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|t| t.to_string_lossy().into_owned()));
    (name, tid)
}

/// The current stack as `<file>+0x<offset>` lines, without resolving a symbol.
fn unresolved_backtrace() -> String {
    let mut ips = Vec::new();
    backtrace::trace(|frame| {
        ips.push(frame.ip() as usize);
        ips.len() < MAX_FRAMES
    });
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let modules = Modules::parse(&maps);
    let mut out = String::from("stack backtrace:\n");
    for (i, &ip) in ips.iter().enumerate() {
        // A return address: the call that made the frame is the instruction before it.
        let pc = ip.saturating_sub(1);
        match modules.find(pc) {
            Some((file, offset)) => {
                let _ = writeln!(out, "  {i:>3}: {file}+0x{offset:x}");
            }
            None => {
                let _ = writeln!(out, "  {i:>3}: 0x{pc:x} (in no mapped file)");
            }
        }
    }
    if ips.len() == MAX_FRAMES {
        let _ = writeln!(out, "  (cut off after {MAX_FRAMES} frames)");
    }
    out.push_str(
        "note: frames are left unsymbolized so that the plugin's library can unload; symbolize \
         one offline with `addr2line -Cfie <file> <offset>` (binutils), or set \
         BKG_PLUGIN_SYMBOLIZE=1 for std's symbolized backtrace (the plugin's library then \
         stays in memory until the host exits)\n",
    );
    out
}

/// The file-backed mappings of `/proc/self/maps`, each with its file's load base.
struct Modules<'a> {
    /// (start, end, file, load base of that file).
    ranges: Vec<(usize, usize, &'a str, usize)>,
}

impl<'a> Modules<'a> {
    fn parse(maps: &'a str) -> Self {
        // `start-end perms offset dev inode path`; the path may hold spaces.
        let mut all = Vec::new();
        for line in maps.lines() {
            let mut fields = line.splitn(6, ' ');
            let (Some(range), Some(_perms), Some(offset), Some(_dev), Some(_inode), Some(path)) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                continue;
            };
            let path = path.trim_start();
            if !path.starts_with('/') {
                continue; // anonymous, [stack], [vdso], ...
            }
            let Some((start, end)) = range.split_once('-') else { continue };
            let (Ok(start), Ok(end), Ok(offset)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
                usize::from_str_radix(offset, 16),
            ) else {
                continue;
            };
            all.push((start, end, offset, path));
        }
        // A shared library or position-independent executable is linked at address 0: its
        // addresses (what addr2line reads) are relative to where its file offset 0 is
        // mapped, the lowest mapping of the file (without one, this mapping's start less
        // its file offset).
        let ranges = all
            .iter()
            .map(|&(start, end, offset, path)| {
                let base = all
                    .iter()
                    .filter(|m| m.3 == path && m.2 == 0)
                    .map(|m| m.0)
                    .min()
                    .unwrap_or(start.saturating_sub(offset));
                (start, end, path, base)
            })
            .collect();
        Modules { ranges }
    }

    /// The file holding `pc` and `pc`'s address within it.
    fn find(&self, pc: usize) -> Option<(&'a str, usize)> {
        self.ranges
            .iter()
            .find(|r| r.0 <= pc && pc < r.1)
            .map(|&(_, _, path, base)| (path, pc - base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_placed_in_its_file_relative_to_the_files_load_base() {
        let maps = "\
7f0000000000-7f0000001000 r--p 00000000 08:01 42 /plugins/libx.so
7f0000001000-7f0000005000 r-xp 00000000 08:01 42 /plugins/libx.so
7f0000006000-7f0000009000 r-xp 00001000 08:01 7 /opt/dir with space/liby.so (deleted)
7f0000005000-7f0000006000 rw-p 00000000 00:00 0
7ffc00000000-7ffc00001000 r-xp 00000000 00:00 0 [vdso]
";
        let modules = Modules::parse(maps);
        assert_eq!(modules.find(0x7f0000001234), Some(("/plugins/libx.so", 0x1234)));
        // No mapping at file offset 0: the base is the mapping's start less its offset.
        assert_eq!(
            modules.find(0x7f0000006010),
            Some(("/opt/dir with space/liby.so (deleted)", 0x1010))
        );
        assert_eq!(modules.find(0x7f0000005100), None, "anonymous memory");
        assert_eq!(modules.find(0x7ffc00000010), None, "the vdso is no file");
        assert_eq!(modules.find(0x10), None);
    }

    #[test]
    fn this_process_own_code_is_found_in_its_executable() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let modules = Modules::parse(&maps);
        let exe = std::env::current_exe().unwrap();
        let here = a_frame_is_placed_in_its_file_relative_to_the_files_load_base as fn() as usize;
        let (file, offset) = modules.find(here).expect("the test's code is in a mapped file");
        assert_eq!(std::path::Path::new(file), exe);
        assert!(offset > 0 && offset < here, "{offset:#x}");
    }

    #[test]
    fn the_unresolved_backtrace_names_files_and_offsets_and_says_how_to_symbolize() {
        let text = unresolved_backtrace();
        let exe = std::env::current_exe().unwrap();
        let own = format!("{}+0x", exe.display());
        assert!(text.starts_with("stack backtrace:\n"), "{text}");
        assert!(text.lines().any(|l| l.trim_start().starts_with("0: ")), "{text}");
        assert!(text.contains(&own), "no frame in the test binary:\n{text}");
        assert!(text.contains("addr2line -Cfie <file> <offset>"), "{text}");
        assert!(text.contains(SYMBOLIZE_ENV), "{text}");
        // Offsets only: no symbol name of this test crate appears.
        assert!(!text.contains("panic_hook"), "{text}");
    }
}
