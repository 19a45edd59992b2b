use super::*;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn write(disk: &SimDisk, path: &str, bytes: &[u8]) -> Arc<dyn DiskFile> {
    let f = disk.open(&p(path), OpenMode::CreateTruncate).unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f
}

fn content(disk: &SimDisk, path: &str) -> Option<Vec<u8>> {
    match disk.read(&p(path)) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn synced_data_and_names_survive_every_cut() {
    for seed in 0..200 {
        let disk = SimDisk::new();
        disk.create_dir_all(&p("/d")).unwrap();
        disk.sync_dir(&p("/")).unwrap();
        let f = write(&disk, "/d/a", &[7; 3000]);
        f.sync_data().unwrap();
        disk.sync_dir(&p("/d")).unwrap();
        // Later, unsynced: more bytes, and a second file.
        f.write_all_at(&[9; 1000], 3000).unwrap();
        write(&disk, "/d/b", b"later");
        let after = disk.after_power_loss(seed);
        let a = content(&after, "/d/a").expect("a synced name survives");
        assert!(a.len() >= 3000 && a[..3000] == [7; 3000], "seed {seed}");
        assert!(a[3000..].iter().all(|b| *b == 0 || *b == 9), "seed {seed}");
    }
}

#[test]
fn unsynced_writes_and_names_are_sometimes_lost_and_sometimes_kept() {
    let (mut lost, mut kept, mut torn, mut names_lost, mut names_kept) = (0, 0, 0, 0, 0);
    for seed in 0..200 {
        let disk = SimDisk::new();
        let f = write(&disk, "/a", &[1; 2048]);
        f.sync_all().unwrap();
        disk.sync_dir(&p("/")).unwrap();
        f.write_all_at(&[2; 2048], 2048).unwrap();
        write(&disk, "/b", b"x");
        let after = disk.after_power_loss(seed);
        let a = content(&after, "/a").unwrap();
        match a.len() {
            2048 => lost += 1,
            4096 if a[2048..].iter().all(|b| *b == 2) => kept += 1,
            _ => torn += 1,
        }
        match content(&after, "/b") {
            None => names_lost += 1,
            Some(_) => names_kept += 1,
        }
    }
    assert!(lost > 0 && kept > 0 && torn > 0, "{lost} {kept} {torn}");
    assert!(
        names_lost > 0 && names_kept > 0,
        "{names_lost} {names_kept}"
    );
}

#[test]
fn a_synced_rename_replaces_atomically_and_an_unsynced_one_is_old_or_new() {
    let (mut old, mut new) = (0, 0);
    for seed in 0..100 {
        let disk = SimDisk::new();
        let f = write(&disk, "/state", b"old");
        f.sync_all().unwrap();
        disk.sync_dir(&p("/")).unwrap();
        let t = write(&disk, "/state.tmp", b"new");
        t.sync_all().unwrap();
        disk.rename(&p("/state.tmp"), &p("/state")).unwrap();
        let after = disk.after_power_loss(seed);
        match content(&after, "/state").as_deref() {
            Some(b"old") => old += 1,
            Some(b"new") => new += 1,
            other => panic!("seed {seed}: state is {other:?}"),
        }
    }
    assert!(old > 0 && new > 0);
    let disk = SimDisk::new();
    write(&disk, "/state.tmp", b"new").sync_all().unwrap();
    disk.rename(&p("/state.tmp"), &p("/state")).unwrap();
    disk.sync_dir(&p("/")).unwrap();
    for seed in 0..20 {
        let after = disk.after_power_loss(seed);
        assert_eq!(content(&after, "/state").as_deref(), Some(&b"new"[..]));
        assert_eq!(content(&after, "/state.tmp"), None);
    }
}

#[test]
fn a_directory_whose_name_was_never_synced_can_vanish_with_its_files() {
    let mut gone = 0;
    for seed in 0..100 {
        let disk = SimDisk::new();
        disk.create_dir_all(&p("/x/y")).unwrap();
        let f = write(&disk, "/x/y/f", b"data");
        f.sync_all().unwrap();
        disk.sync_dir(&p("/x/y")).unwrap();
        let after = disk.after_power_loss(seed);
        if content(&after, "/x/y/f").is_none() {
            gone += 1;
        }
    }
    assert!(gone > 0);
}

#[test]
fn a_cut_disk_refuses_everything_and_a_process_crash_keeps_everything() {
    let disk = SimDisk::new();
    let f = write(&disk, "/a", b"unsynced");
    disk.cut_power();
    assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
    assert_eq!(
        disk.open(&p("/a"), OpenMode::Read)
            .unwrap_err()
            .raw_os_error(),
        Some(5)
    );
    let after = disk.after_process_crash();
    assert_eq!(content(&after, "/a").as_deref(), Some(&b"unsynced"[..]));
}

#[test]
fn truncation_and_positional_io_behave_as_files_do() {
    let disk = SimDisk::new();
    let f = write(&disk, "/a", b"hello world");
    f.set_len(5).unwrap();
    assert_eq!(f.len().unwrap(), 5);
    let mut buf = [0; 8];
    assert_eq!(f.read_at(&mut buf, 3).unwrap(), 2);
    assert_eq!(&buf[..2], b"lo");
    assert_eq!(f.read_at(&mut buf, 9).unwrap(), 0);
    assert!(disk.open(&p("/a"), OpenMode::CreateNew).is_err());
    disk.remove_file(&p("/a")).unwrap();
    assert!(!disk.exists(&p("/a")).unwrap());
    assert_eq!(disk.read_dir(&p("/")).unwrap(), Vec::<PathBuf>::new());
}

#[test]
fn a_cut_at_a_change_stops_the_disk_there() {
    let disk = SimDisk::new();
    let f = write(&disk, "/a", b"one");
    f.sync_all().unwrap();
    disk.sync_dir(&p("/")).unwrap();
    let made = disk.changes();
    assert_eq!(made, 4, "create, write, sync, directory sync");
    disk.cut_at_change(made + 2);
    f.write_all_at(b"two", 0).unwrap();
    assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
    assert!(disk.read(&p("/a")).is_err());
    for seed in 0..20 {
        let after = disk.after_power_loss(seed);
        let a = content(&after, "/a").unwrap();
        assert!(a == b"one" || a == b"two", "seed {seed}: {a:?}");
    }
}
