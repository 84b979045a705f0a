//! Faults that must stay inside one entry or one call (issue 12, items 2, 11 and 15): an
//! entry or a job that panics, a grace period of `Duration::MAX`, a `query` from the
//! reactor's own thread. Every wait is bounded by a watchdog; nothing asserts on speed.

use std::io;
use std::net::UdpSocket as StdUdpSocket;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use getty_reactor::{
    Context, Entry, EntryId, NoCommand, PanicPolicy, Reactor, ReactorHandle, Ready, Recipient,
    Status,
};
use mio::net::UdpSocket;
use mio::Interest;

/// The longest any one expected thing may take; it only bounds a failing test.
const STEP: Duration = Duration::from_secs(15);

/// The mark of the panics these tests cause on purpose (their messages are silenced).
const DELIBERATE: &str = "deliberate panic";

/// Runs `body` on its own thread and fails the test if it has not finished within
/// `limit`; a panic in `body` is re-raised here.
fn watchdog<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    let (done_tx, done_rx) = mpsc::channel();
    let body = std::thread::spawn(move || {
        body();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(limit) {
        Ok(()) => body.join().expect("the body finished"),
        Err(RecvTimeoutError::Disconnected) => {
            if let Err(panic) = body.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!("watchdog: not finished within {limit:?}"),
    }
}

type Hook = Arc<Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>>;

/// Guards installed, and the hook that was there before the first.
static QUIET: Mutex<(usize, Option<Hook>)> = Mutex::new((0, None));

/// While alive, the panic hook stays silent about the deliberate panics (their message
/// holds [`DELIBERATE`]) and passes every other panic to the hook installed before; the
/// last guard to go puts that hook back.
struct QuietPanics;

impl QuietPanics {
    fn new() -> QuietPanics {
        let mut quiet = QUIET.lock().unwrap_or_else(|p| p.into_inner());
        if quiet.0 == 0 {
            let previous: Hook = Arc::new(std::panic::take_hook());
            quiet.1 = Some(previous.clone());
            std::panic::set_hook(Box::new(move |info| {
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("");
                if !message.contains(DELIBERATE) {
                    previous(info);
                }
            }));
        }
        quiet.0 += 1;
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        let mut quiet = QUIET.lock().unwrap_or_else(|p| p.into_inner());
        quiet.0 -= 1;
        // The hook cannot change while this thread unwinds (a failing test): it stays,
        // passing every other panic on.
        if quiet.0 == 0 && !std::thread::panicking() {
            let _ = std::panic::take_hook();
            if let Some(previous) = quiet.1.take() {
                std::panic::set_hook(Box::new(move |info| previous(info)));
            }
        }
    }
}

/// Where an entry panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Never: a bystander that answers commands and counts its timer ticks.
    None,
    Start,
    Timer,
    Command,
    /// In `on_ready`, when its UDP socket gets a datagram.
    Ready,
    /// In `on_timer`, and again in `on_panic`.
    Twice,
    /// In its destructor, after ending cleanly on a timer.
    Drop,
    /// In a graceful `on_shutdown`.
    Shutdown,
}

/// What entries tell the test thread.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    Started(&'static str),
    Ticked(&'static str),
    Answered(&'static str, Option<EntryId>),
    /// `on_panic` heard this message.
    Panicked(&'static str, String),
    Dropped(&'static str),
    /// The port of the "ready" entry's socket.
    Bound(u16),
}

/// What the test thread asks of a [`Faulty`] entry.
enum Ask {
    /// Answer on this channel, naming the current entry.
    Reply(Sender<Note>),
    /// Nothing to answer (only the "command" entry's panic matters).
    Poke,
}

struct Faulty {
    name: &'static str,
    fault: Fault,
    notes: Sender<Note>,
    socket: Option<UdpSocket>,
}

impl Faulty {
    fn new(name: &'static str, fault: Fault, notes: &Sender<Note>) -> Faulty {
        Faulty {
            name,
            fault,
            notes: notes.clone(),
            socket: None,
        }
    }

    fn note(&self, note: Note) {
        let _ = self.notes.send(note);
    }
}

impl Entry for Faulty {
    type Command = Ask;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        if self.fault == Fault::Start {
            panic!("{DELIBERATE} in on_start of {}", self.name);
        }
        if self.fault == Fault::Ready {
            let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            cx.registry()
                .register(&mut socket, cx.token(), Interest::READABLE)
                .unwrap();
            self.note(Note::Bound(socket.local_addr().unwrap().port()));
            self.socket = Some(socket);
        }
        cx.set_timer(Duration::from_millis(2), 0);
        self.note(Note::Started(self.name));
        Status::Continue
    }

    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        if self.fault == Fault::Ready {
            panic!("{DELIBERATE} in on_ready of {}", self.name);
        }
        Status::Continue
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _: u64) -> Status {
        match self.fault {
            Fault::Timer | Fault::Twice => panic!("{DELIBERATE} in on_timer of {}", self.name),
            Fault::Drop => return Status::Done,
            _ => {}
        }
        self.note(Note::Ticked(self.name));
        cx.set_timer(Duration::from_millis(2), 0);
        Status::Continue
    }

    fn on_command(&mut self, _: &mut Context<'_>, command: Ask) -> Status {
        if self.fault == Fault::Command {
            panic!("{DELIBERATE} in on_command of {}", self.name);
        }
        if let Ask::Reply(reply) = command {
            let current = getty_reactor::current().map(|(id, _)| id);
            let _ = reply.send(Note::Answered(self.name, current));
        }
        Status::Continue
    }

    fn on_shutdown(&mut self, _: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        if self.fault == Fault::Shutdown && deadline.is_some() {
            panic!("{DELIBERATE} in on_shutdown of {}", self.name);
        }
        Status::Done
    }

    fn on_panic(&mut self, _: &mut Context<'_>, message: &str) {
        self.note(Note::Panicked(self.name, message.to_owned()));
        if self.fault == Fault::Twice {
            panic!("{DELIBERATE} in on_panic of {}", self.name);
        }
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.note(Note::Dropped(self.name));
        if self.fault == Fault::Drop {
            panic!("{DELIBERATE} in the destructor of {}", self.name);
        }
    }
}

/// Waits for the first note that `pred` picks, keeping the others for later.
fn wait_for(rx: &Receiver<Note>, seen: &mut Vec<Note>, pred: impl Fn(&Note) -> bool) -> Note {
    if let Some(i) = seen.iter().position(&pred) {
        return seen.remove(i);
    }
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(note) if pred(&note) => return note,
            Ok(note) => seen.push(note),
            Err(e) => panic!("no such note ({e}); seen: {seen:?}"),
        }
    }
}

fn ask(handle: &ReactorHandle, to: Recipient<Ask>) -> Note {
    let (tx, rx) = mpsc::channel();
    handle.send(to, Ask::Reply(tx)).expect("the reactor runs");
    rx.recv_timeout(STEP).expect("the entry answered")
}

/// A panic in any call of one entry (start, readiness, timer, command, destructor, and
/// `on_panic` itself) or in a posted job ends that entry or job alone: the reactor runs
/// on, other entries keep their timers and answer commands, `on_panic` heard the message,
/// and no entry is left "current" outside its own calls.
#[test]
fn a_panicking_entry_or_job_ends_alone() {
    watchdog(STEP * 4, || {
        let _quiet = QuietPanics::new();
        let (notes_tx, notes) = mpsc::channel();
        let (ids_tx, ids) = mpsc::channel();
        let faults = [
            ("bystander", Fault::None),
            ("start", Fault::Start),
            ("timer", Fault::Timer),
            ("command", Fault::Command),
            ("ready", Fault::Ready),
            ("twice", Fault::Twice),
            ("drop", Fault::Drop),
        ];
        let thread = Reactor::start_thread("faults", move |reactor| {
            for (name, fault) in faults {
                let id = reactor.spawn(Faulty::new(name, fault, &notes_tx));
                ids_tx.send((name, id)).map_err(io::Error::other)?;
            }
            Ok(())
        })
        .expect("the reactor starts");
        let handle = thread.handle().clone();
        let ids: Vec<(&str, Recipient<Ask>)> = ids.try_iter().collect();
        let id_of = |name: &str| ids.iter().find(|(n, _)| *n == name).unwrap().1;
        let mut seen = Vec::new();

        for name in ["start", "timer", "twice"] {
            let note = wait_for(
                &notes,
                &mut seen,
                |n| matches!(n, Note::Panicked(w, _) if *w == name),
            );
            let Note::Panicked(_, message) = note else {
                unreachable!()
            };
            assert!(message.contains(DELIBERATE), "{name}: {message}");
        }
        // The panic in on_ready comes from a real datagram.
        let Note::Bound(port) = wait_for(&notes, &mut seen, |n| matches!(n, Note::Bound(_))) else {
            unreachable!()
        };
        let sender = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"boom", ("127.0.0.1", port)).unwrap();
        wait_for(&notes, &mut seen, |n| {
            matches!(n, Note::Panicked("ready", _))
        });
        // The panic in on_command comes from another thread's command.
        handle.send(id_of("command"), Ask::Poke).unwrap();
        wait_for(&notes, &mut seen, |n| {
            matches!(n, Note::Panicked("command", _))
        });
        // Every entry that panicked was dropped (and the one whose destructor panics too).
        for name in ["start", "timer", "twice", "ready", "command", "drop"] {
            wait_for(&notes, &mut seen, |n| *n == Note::Dropped(name));
        }
        // A panicking job is dropped; a query whose job panics fails, and says why.
        handle.execute(|_| panic!("{DELIBERATE} in a job")).unwrap();
        let failed = handle.query(|_| -> u32 { panic!("{DELIBERATE} in a query") });
        let error = failed.expect_err("the query's job panicked");
        assert!(error.to_string().contains("panicked"), "{error}");

        // The reactor carries on: the bystander still ticks and answers, and it alone is
        // left; outside a call, no entry is current.
        wait_for(&notes, &mut seen, |n| *n == Note::Ticked("bystander"));
        seen.clear();
        wait_for(&notes, &mut seen, |n| *n == Note::Ticked("bystander"));
        let bystander = id_of("bystander");
        assert_eq!(
            ask(&handle, bystander),
            Note::Answered("bystander", Some(bystander.id()))
        );
        let (entries, current, panics) = handle
            .query(|s| {
                let current = getty_reactor::current().map(|(id, _)| id);
                (s.entry_count(), current, s.loop_metrics().panics)
            })
            .expect("the reactor still answers");
        assert_eq!(entries, 1, "only the bystander is left");
        assert_eq!(current, None, "no entry is current between calls");
        // start, timer, twice (twice), ready, command, drop, the job, the query.
        assert_eq!(panics, 9);

        handle.shutdown();
        thread.join().expect("the reactor ended cleanly");
    });
}

/// A panic in a graceful `on_shutdown` ends that entry; the others drain and the reactor
/// stops cleanly.
#[test]
fn a_panic_while_shutting_down_ends_only_its_entry() {
    watchdog(STEP * 2, || {
        let _quiet = QuietPanics::new();
        let (notes_tx, notes) = mpsc::channel();
        let thread = Reactor::start_thread("shutdown-fault", move |reactor| {
            reactor.spawn(Faulty::new("shutdown", Fault::Shutdown, &notes_tx));
            reactor.spawn(Faulty::new("bystander", Fault::None, &notes_tx));
            Ok(())
        })
        .expect("the reactor starts");
        let mut seen = Vec::new();
        wait_for(&notes, &mut seen, |n| *n == Note::Ticked("bystander"));
        thread
            .handle()
            .shutdown_graceful(Duration::from_secs(5))
            .unwrap();
        thread.join().expect("the reactor ended cleanly");
        wait_for(&notes, &mut seen, |n| {
            matches!(n, Note::Panicked("shutdown", _))
        });
        wait_for(&notes, &mut seen, |n| *n == Note::Dropped("shutdown"));
        wait_for(&notes, &mut seen, |n| *n == Note::Dropped("bystander"));
    });
}

/// Set in the child process that `abort_policy_aborts_the_process` starts.
const ABORT_CHILD: &str = "GETTY_FAULTS_ABORT_CHILD";

/// `PanicPolicy::Abort` ends the process at the first panic, before any other callback
/// (run in a child process: this test binary itself, filtered to this test).
#[test]
fn abort_policy_aborts_the_process() {
    if std::env::var_os(ABORT_CHILD).is_some() {
        let mut reactor = Reactor::builder()
            .panic_policy(PanicPolicy::Abort)
            .build()
            .unwrap();
        let (notes_tx, _notes) = mpsc::channel();
        reactor.spawn(Faulty::new("timer", Fault::Timer, &notes_tx));
        let _ = reactor.run();
        println!("the reactor returned");
        std::process::exit(0); // not reached under PanicPolicy::Abort
    }
    watchdog(STEP * 2, || {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "abort_policy_aborts_the_process", "--nocapture"])
            .env(ABORT_CHILD, "1")
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "{stdout}");
        assert!(!stdout.contains("the reactor returned"), "{stdout}");
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            const SIGABRT: i32 = 6; // on every unix getty-rs runs on
            assert_eq!(output.status.signal(), Some(SIGABRT), "{output:?}");
        }
    });
}

/// An entry that, shut down gracefully, finishes its work on a timer a little later.
struct Finisher {
    done: Sender<()>,
}

impl Entry for Finisher {
    type Command = NoCommand;

    fn on_start(&mut self, _: &mut Context<'_>) -> Status {
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_timer(&mut self, _: &mut Context<'_>, _: u64) -> Status {
        let _ = self.done.send(());
        Status::Done
    }
    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        if deadline.is_some() {
            cx.set_timer(Duration::from_millis(20), 0);
            return Status::Continue;
        }
        Status::Done
    }
}

/// `shutdown_graceful(Duration::MAX)` means "as long as the entries need": it used to
/// overflow the deadline and panic the reactor.
#[test]
fn a_grace_period_of_duration_max_waits_for_the_entries() {
    watchdog(STEP * 2, || {
        let (done_tx, done) = mpsc::channel();
        let thread = Reactor::start_thread("forever-grace", move |reactor| {
            reactor.spawn(Finisher { done: done_tx });
            Ok(())
        })
        .expect("the reactor starts");
        thread.handle().shutdown_graceful(Duration::MAX).unwrap();
        done.recv_timeout(STEP)
            .expect("the entry finished its work");
        thread.join().expect("the reactor stopped without a panic");
    });
}

/// Calls `query` from inside a callback, on the reactor's own thread.
struct SelfQuery {
    result: Sender<io::Result<usize>>,
}

impl Entry for SelfQuery {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let _ = self.result.send(cx.handle().query(|s| s.entry_count()));
        Status::Done
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
}

/// A `query` from the reactor's own thread would wait for itself forever: it fails at once
/// with `Deadlock`, in a callback, in a job, and on the thread that holds the reactor.
#[test]
fn a_query_on_the_reactors_own_thread_fails_instead_of_hanging() {
    watchdog(STEP * 2, || {
        let (result_tx, results) = mpsc::channel();
        let job_tx = result_tx.clone();
        let thread = Reactor::start_thread("self-query", move |reactor| {
            reactor.spawn(SelfQuery { result: result_tx });
            Ok(())
        })
        .expect("the reactor starts");
        let handle = thread.handle().clone();
        let inner = handle.clone();
        handle
            .execute(move |_| {
                let _ = job_tx.send(inner.query(|s| s.entry_count()));
            })
            .unwrap();
        for place in ["a callback", "a job"] {
            let result = results.recv_timeout(STEP).expect("the query returned");
            let error = result.expect_err(place);
            assert_eq!(error.kind(), io::ErrorKind::Deadlock, "{place}: {error}");
        }
        // The reactor is fine, and a query from another thread still works.
        assert_eq!(handle.query(|s| s.entry_count()).unwrap(), 0);
        handle.shutdown();
        thread.join().unwrap();

        let reactor = Reactor::new().unwrap();
        let error = reactor.handle().query(|s| s.entry_count()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Deadlock);
    });
}

/// Spawns two members into a group of its own (as a server does its sessions), then
/// panics on a timer.
struct Owner {
    notes: Sender<Note>,
}

impl Entry for Owner {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let group = cx.new_group().expect("a group");
        for name in ["member-a", "member-b"] {
            cx.spawn_in(group, Faulty::new(name, Fault::None, &self.notes));
        }
        cx.set_timer(Duration::from_millis(5), 0);
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_timer(&mut self, _: &mut Context<'_>, _: u64) -> Status {
        panic!("{DELIBERATE} in a group owner");
    }
}

/// A panicking owner (a server, say) is removed; the entries it spawned live on.
#[test]
fn a_panicking_owner_is_removed_and_its_members_live_on() {
    watchdog(STEP * 2, || {
        let _quiet = QuietPanics::new();
        let (notes_tx, notes) = mpsc::channel();
        let thread = Reactor::start_thread("owner-fault", move |reactor| {
            reactor.spawn(Owner { notes: notes_tx });
            Ok(())
        })
        .expect("the reactor starts");
        let handle = thread.handle().clone();
        let mut seen = Vec::new();
        let deadline = Instant::now() + STEP;
        while handle.query(|s| s.loop_metrics().panics).unwrap() == 0 {
            assert!(Instant::now() < deadline, "the owner never panicked");
            std::thread::sleep(Duration::from_millis(2));
        }
        notes.try_iter().for_each(drop); // ticks from before the panic
        for name in ["member-a", "member-b"] {
            wait_for(&notes, &mut seen, |n| *n == Note::Ticked(name));
        }
        assert_eq!(handle.query(|s| s.entry_count()).unwrap(), 2);
        handle.shutdown();
        thread.join().expect("the reactor ended cleanly");
    });
}

/// A value whose destructor panics (as a user's message type might), counting its drops.
struct Bomb(Arc<AtomicUsize>);

impl Drop for Bomb {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("{DELIBERATE} in the destructor of a command");
    }
}

/// Ends as soon as it starts.
struct Brief;

impl Entry for Brief {
    type Command = Bomb;

    fn on_start(&mut self, _: &mut Context<'_>) -> Status {
        Status::Done
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
}

/// A command whose destructor panics, aimed at an entry that has ended (from another
/// thread, or from the reactor's own, through a job), is dropped by the reactor: the panic
/// is counted and the reactor carries on. It used to unwind out of `run` and end the
/// reactor with every entry on it.
#[test]
fn a_command_for_an_ended_entry_whose_drop_panics_is_contained() {
    watchdog(STEP * 2, || {
        let _quiet = QuietPanics::new();
        let (notes_tx, notes) = mpsc::channel();
        let thread = Reactor::start_thread("bombs", |_| Ok(())).expect("the reactor starts");
        let handle = thread.handle().clone();
        let (gone, bystander) = handle
            .query(move |s| {
                let bystander = s.spawn(Faulty::new("bystander", Fault::None, &notes_tx));
                (s.spawn(Brief), bystander)
            })
            .unwrap();
        assert!(!handle.query(move |s| s.is_alive(gone)).unwrap());
        let drops = Arc::new(AtomicUsize::new(0));

        // From another thread: the queue's `Deliver`.
        handle.send(gone, Bomb(drops.clone())).unwrap();
        // From the reactor's own thread: the local mailbox.
        let bomb = Bomb(drops.clone());
        handle.execute(move |s| s.send(gone, bomb)).unwrap();

        let panics = handle.query(|s| s.loop_metrics().panics).unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        assert_eq!(panics, 2, "each destructor's panic was caught and counted");
        // The bystander still answers and ticks.
        assert_eq!(
            ask(&handle, bystander),
            Note::Answered("bystander", Some(bystander.id()))
        );
        notes.try_iter().for_each(drop);
        wait_for(&notes, &mut Vec::new(), |n| *n == Note::Ticked("bystander"));
        handle.shutdown();
        thread.join().expect("the reactor ended cleanly");
    });
}

/// Arms itself on first use; its destructor then panics (a layer's per-reactor state with
/// a faulty `Drop`).
#[derive(Default)]
struct BombExtension(Option<Bomb>);

/// On the last shutdown, leaves behind a command for itself in the local mailbox, another
/// in the cross-thread queue, a job holding a bomb, and an extension that panics when the
/// reactor drops it.
struct Leaver(Arc<AtomicUsize>);

impl Entry for Leaver {
    type Command = Bomb;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.extension::<BombExtension>().0 = Some(Bomb(self.0.clone()));
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_shutdown(&mut self, cx: &mut Context<'_>, _: Option<Instant>) -> Status {
        let me = cx.recipient::<Bomb>().expect("a Leaver takes bombs");
        cx.send(me, Bomb(self.0.clone()));
        let handle = cx.handle();
        handle.send(me, Bomb(self.0.clone())).unwrap();
        let bomb = Bomb(self.0.clone());
        handle.execute(move |_| drop(bomb)).unwrap();
        Status::Done
    }
}

/// What a stopping reactor discards (commands in its mailbox and in its queue, jobs never
/// run, its extensions) is dropped one by one under guard: a destructor that panics is
/// reported and the next is still dropped. Each used to unwind out of `run` (or `drop`),
/// and two in one batch aborted the process.
#[test]
fn what_a_stopping_reactor_discards_is_dropped_under_guard() {
    watchdog(STEP * 2, || {
        let _quiet = QuietPanics::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let mut reactor = Reactor::new().unwrap();
        reactor.spawn(Leaver(drops.clone()));
        reactor.handle().shutdown();
        reactor.run().expect("the reactor stops cleanly");
        assert_eq!(drops.load(Ordering::SeqCst), 3, "mailbox, queue and job");
        drop(reactor);
        assert_eq!(drops.load(Ordering::SeqCst), 4, "and the extension");
    });
}
