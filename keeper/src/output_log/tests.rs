use std::fs::OpenOptions;

use super::*;

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn lines_are_kept_whole_across_chunks_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/a.log");
    let mut log = OutputLog::open(&path, 4096, 2).unwrap();
    // 100-byte lines delivered in awkward chunks: 50 lines = 5000 bytes, past 4096.
    let line = format!("{}\n", "x".repeat(99));
    let all = line.repeat(50);
    for chunk in all.as_bytes().chunks(37) {
        log.write(chunk);
    }
    log.finish();
    let (current, older) = (read(&path), read(&OutputLog::backup_path(&path, 1)));
    assert!(older.len() <= 4096 && current.len() <= 4096);
    assert_eq!(older.len() + current.len(), 5000, "nothing lost");
    for text in [&current, &older] {
        assert!(text.lines().all(|l| l.len() == 99), "whole lines only");
    }
    assert_eq!(tail(&path, 3, 1 << 20).unwrap().len(), 3);
}

#[test]
fn a_flood_of_short_lines_in_big_chunks_rotates_on_line_boundaries_and_loses_nothing() {
    // `yes` at 64 KiB a read: many rotations planned inside one buffer.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let mut log = OutputLog::open(&path, 5000, 3).unwrap();
    let numbered: String = (0..20_000).map(|n| format!("{n}\n")).collect();
    for chunk in numbered.as_bytes().chunks(65536) {
        log.write(chunk);
    }
    log.finish();
    let files: Vec<String> = (1..=3)
        .rev()
        .map(|n| read(&OutputLog::backup_path(&path, n)))
        .chain([read(&path)])
        .collect();
    for text in &files {
        assert!(text.len() <= 5000 && text.ends_with('\n'), "{} bytes", text.len());
    }
    // The four files hold the last lines in order, each whole.
    let kept: Vec<u32> = files
        .concat()
        .lines()
        .map(|l| l.parse().expect("a whole number"))
        .collect();
    let last = *kept.last().unwrap();
    assert_eq!(last, 19_999);
    assert_eq!(kept, (last + 1 - kept.len() as u32..=last).collect::<Vec<_>>());
}

#[test]
fn only_backups_files_are_kept_and_an_endless_line_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let mut log = OutputLog::open(&path, 4096, 2).unwrap();
    for _ in 0..20 {
        log.write(&[b'y'; 3000]);
        log.write(b"\n");
    }
    log.flush();
    assert!(OutputLog::backup_path(&path, 2).exists());
    assert!(!OutputLog::backup_path(&path, 3).exists());
    log.write(&vec![b'z'; MAX_LINE * 2 + 10]);
    log.finish();
    let last = tail(&path, 1, 1 << 20).unwrap();
    assert_eq!(last[0].len(), 10, "pieces of at most MAX_LINE");
    for n in [1, 2] {
        let older = read(&OutputLog::backup_path(&path, n));
        assert_eq!(older.len(), MAX_LINE + 1, "a whole piece, alone past log_max_bytes");
    }
    // The same from a partial line that grows past MAX_LINE.
    log.write(b"start");
    log.write(&vec![b'w'; MAX_LINE]);
    log.finish();
    let last = tail(&path, 2, 1 << 20).unwrap();
    assert_eq!((last[0].len(), last[1].as_str()), (MAX_LINE, "wwwww"));
    assert!(last[0].starts_with("startwww"));
}

#[test]
fn lines_wait_in_the_buffer_until_it_fills_or_the_flush_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let mut log = OutputLog::open(&path, 10 << 20, 1).unwrap();
    assert_eq!(log.flush_due(), None, "nothing buffered");
    let before = Instant::now();
    log.write(b"one\ntwo\nthr");
    assert_eq!(read(&path), "", "buffered, not written");
    let due = log.flush_due().expect("a flush is due");
    assert!(due >= before + FLUSH_INTERVAL && due <= Instant::now() + FLUSH_INTERVAL);
    log.flush();
    assert_eq!(read(&path), "one\ntwo\n", "whole lines only");
    assert_eq!(log.flush_due(), None);
    log.write(b"ee\n");
    assert_eq!(read(&path), "one\ntwo\n", "buffered");
    log.flush();
    assert_eq!(read(&path), "one\ntwo\nthree\n");
    // A full buffer is written without waiting for the flush.
    let line = format!("{}\n", "y".repeat(1023));
    for _ in 0..BUFFER_BYTES / line.len() {
        log.write(line.as_bytes());
    }
    assert_eq!(read(&path).len(), 14 + BUFFER_BYTES, "written once full");
    assert_eq!(log.flush_due(), None);
}

#[test]
fn output_the_disk_refuses_is_counted_and_noted_once_the_disk_takes_writes_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.log");
    let mut log = OutputLog::open(&path, 1 << 20, 1).unwrap();
    log.write(b"before\n");
    log.flush();
    // The disk fills up: /dev/full refuses every write with ENOSPC. (Checked "in place" just
    // now, so the swap is not taken for a move.)
    let real = std::mem::replace(
        &mut log.file,
        OpenOptions::new().append(true).open("/dev/full").unwrap(),
    );
    log.last_place_check = Some(Instant::now() + Duration::from_secs(3600));
    log.write(b"lost one\n");
    log.flush_checking(false);
    log.write(b"lost two\n");
    log.flush_checking(false);
    // Space again.
    log.file = real;
    log.write(b"after\n");
    log.flush_checking(false);
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "before");
    assert!(
        lines[1].starts_with("heartbeatd: up to 18 bytes of output lost: ") && lines[1].contains("No space left"),
        "{text}"
    );
    assert_eq!(lines[2..], ["after"]);
}

#[test]
fn a_removed_output_file_is_opened_again_at_its_path_with_a_line_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/a.log");
    let mut log = OutputLog::open(&path, 1 << 20, 2).unwrap();
    log.write(b"first\n");
    log.flush();
    // The reflex on a full disk: the whole logs/ directory goes.
    fs::remove_dir_all(dir.path().join("logs")).unwrap();
    log.write(b"second\n");
    log.flush();
    assert_eq!(read(&path), format!("heartbeatd: {REOPENED_NOTE}\nsecond\n"));
    let mode = fs::metadata(&path).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "created through private_file");
    // Rotation goes on from the new file.
    log.write(b"third\n");
    log.flush();
    assert!(read(&path).ends_with("second\nthird\n"));
}

#[test]
fn a_moved_output_file_is_left_as_it_is_and_a_new_one_started() {
    // logrotate without copytruncate: rename, then expect the writer to open a new file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let moved = dir.path().join("a.log-20260101");
    let mut log = OutputLog::open(&path, 1 << 20, 2).unwrap();
    log.write(b"before the move\n");
    log.flush();
    fs::rename(&path, &moved).unwrap();
    log.write(b"after the move\n");
    log.flush();
    assert_eq!(read(&moved), "before the move\n");
    assert_eq!(read(&path), format!("heartbeatd: {REOPENED_NOTE}\nafter the move\n"));
    // A rotation right after a removal does not fail on the missing file.
    let mut small = OutputLog::open(&dir.path().join("b.log"), 4096, 1).unwrap();
    small.write(&[b'x'; 4000]);
    small.write(b"\n");
    small.flush();
    fs::remove_file(dir.path().join("b.log")).unwrap();
    small.write(&[b'y'; 200]);
    small.write(b"\n");
    small.flush();
    let text = read(&dir.path().join("b.log"));
    assert!(text.ends_with(&format!("{}\n", "y".repeat(200))), "{text}");
    assert!(!text.contains("lost"), "{text}");
}
