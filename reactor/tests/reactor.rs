//! The reactor's contract, without protocols: dispatch, timers, commands, fairness, shutdown.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use getty_reactor::{Context, Entry, NoCommand, Reactor, Ready, Recipient, Status};

type Log = Rc<RefCell<Vec<String>>>;

/// An entry that writes what happens to it into a shared log.
struct Recorder {
    name: &'static str,
    log: Log,
    /// Timers to arm at start: (delay in ms, tag).
    timers: Vec<(u64, u64)>,
    /// End after this many timers.
    end_after: usize,
    fired: usize,
    /// Return Continue from a graceful on_shutdown (to test the deadline).
    linger: bool,
}

impl Recorder {
    fn new(name: &'static str, log: &Log) -> Self {
        Recorder {
            name,
            log: log.clone(),
            timers: Vec::new(),
            end_after: usize::MAX,
            fired: 0,
            linger: false,
        }
    }

    fn note(&self, what: String) {
        self.log.borrow_mut().push(format!("{}:{what}", self.name));
    }
}

impl Entry for Recorder {
    type Command = &'static str;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        self.note("start".into());
        for &(ms, tag) in &self.timers {
            cx.set_timer(Duration::from_millis(ms), tag);
        }
        Status::Continue
    }

    fn on_ready(&mut self, _: &mut Context<'_>, ready: Ready) -> Status {
        self.note(format!("ready {ready:?}"));
        Status::Continue
    }

    fn on_timer(&mut self, _: &mut Context<'_>, tag: u64) -> Status {
        self.note(format!("timer {tag}"));
        self.fired += 1;
        if self.fired >= self.end_after {
            return Status::Done;
        }
        Status::Continue
    }

    fn on_command(&mut self, _: &mut Context<'_>, text: &'static str) -> Status {
        self.note(format!("command {text}"));
        if text == "stop" {
            return Status::Done;
        }
        Status::Continue
    }

    fn on_wake(&mut self, _: &mut Context<'_>) -> Status {
        self.note("wake".into());
        Status::Continue
    }

    fn on_shutdown(&mut self, _: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        self.note(format!(
            "shutdown {}",
            if deadline.is_some() {
                "graceful"
            } else {
                "now"
            }
        ));
        if self.linger && deadline.is_some() {
            return Status::Continue;
        }
        Status::Done
    }
}

/// Stops the reactor from inside after `delay`.
struct StopAfter(Duration);

impl Entry for StopAfter {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.set_timer(self.0, 0);
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, _: u64) -> Status {
        cx.handle().shutdown();
        Status::Done
    }
}

#[test]
fn timers_fire_in_deadline_order() {
    let log = Log::default();
    let mut r = Reactor::new().unwrap();
    let mut a = Recorder::new("a", &log);
    a.timers = vec![(30, 3), (10, 1), (20, 2)];
    a.end_after = 3;
    r.spawn(a);
    r.spawn(StopAfter(Duration::from_millis(60)));
    r.run().unwrap();
    assert_eq!(
        *log.borrow(),
        ["a:start", "a:timer 1", "a:timer 2", "a:timer 3"],
        "the entry ended itself after its third timer, so it hears no shutdown"
    );
}

/// After a delay, spawns a new recorder and sends a command to it and to an old id.
struct Respawner {
    log: Log,
    old: Recipient<&'static str>,
}

impl Entry for Respawner {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.set_timer(Duration::from_millis(10), 0);
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, _: u64) -> Status {
        let new = cx.spawn(Recorder::new("new", &self.log));
        assert_eq!(
            new.id().token(),
            self.old.id().token(),
            "the slab reuses the key"
        );
        assert_ne!(new, self.old);
        cx.send(self.old, "for-old");
        cx.send(new, "for-new");
        Status::Done
    }
}

#[test]
fn a_stale_id_never_reaches_a_new_entry_in_the_same_slot() {
    let log = Log::default();
    let mut r = Reactor::new().unwrap();
    let old = r.spawn(Recorder::new("old", &log));
    r.handle().send(old, "stop").unwrap(); // frees the slot at the first turn
    r.spawn(Respawner {
        log: log.clone(),
        old,
    });
    r.spawn(StopAfter(Duration::from_millis(30)));
    r.run().unwrap();
    let log = log.borrow();
    assert!(log.contains(&"old:command stop".to_string()), "{log:?}");
    assert!(log.contains(&"new:command for-new".to_string()), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("for-old")), "{log:?}");
}

#[test]
fn commands_from_another_thread_wake_a_sleeping_reactor() {
    let thread = Reactor::start_thread("sleeper", |_| Ok(())).unwrap();
    let handle = thread.handle().clone();
    std::thread::sleep(Duration::from_millis(50)); // the loop is now blocked in poll, no timers
    let (tx, rx) = mpsc::channel();
    let sent = Instant::now();
    handle
        .execute(move |_| {
            tx.send(sent.elapsed()).unwrap();
        })
        .unwrap();
    let latency = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the job ran");
    assert!(latency < Duration::from_secs(5));
    handle.shutdown();
    thread.join().unwrap();
    assert!(handle.is_stopped());
    assert!(
        handle.execute(|_| {}).is_err(),
        "posting to a stopped reactor fails"
    );
}

/// An entry that always has more work: it reschedules itself on every call.
struct Busy {
    turns: Rc<RefCell<u64>>,
}

impl Entry for Busy {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.reschedule(Ready::READABLE);
        Status::Continue
    }
    fn on_ready(&mut self, cx: &mut Context<'_>, _: Ready) -> Status {
        *self.turns.borrow_mut() += 1;
        cx.reschedule(Ready::READABLE);
        Status::Continue
    }
}

#[test]
fn a_busy_entry_does_not_starve_timers_or_others() {
    let log = Log::default();
    let turns = Rc::new(RefCell::new(0));
    let mut r = Reactor::new().unwrap();
    r.spawn(Busy {
        turns: turns.clone(),
    });
    let mut quiet = Recorder::new("quiet", &log);
    quiet.timers = vec![(5, 1), (10, 2)];
    r.spawn(quiet);
    r.spawn(StopAfter(Duration::from_millis(30)));
    let started = Instant::now();
    r.run().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let log = log.borrow();
    assert!(log.contains(&"quiet:timer 1".to_string()), "{log:?}");
    assert!(log.contains(&"quiet:timer 2".to_string()), "{log:?}");
    assert!(*turns.borrow() > 1, "the busy entry ran once per turn");
}

#[test]
fn graceful_shutdown_waits_for_lingering_entries_until_the_deadline() {
    let log = Log::default();
    let thread_log = log.clone();
    let mut r = Reactor::new().unwrap();
    let mut slow = Recorder::new("slow", &thread_log);
    slow.linger = true;
    r.spawn(slow);
    r.spawn(Recorder::new("quick", &thread_log));
    let handle = r.handle();
    handle.shutdown_graceful(Duration::from_millis(50)).unwrap();
    let started = Instant::now();
    r.run().unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(40), "ran only {waited:?}");
    assert!(waited < Duration::from_secs(5));
    let log = log.borrow();
    assert_eq!(
        *log,
        [
            "slow:start",
            "quick:start",
            "slow:shutdown graceful",
            "quick:shutdown graceful",
            "slow:shutdown now",
        ]
    );
    assert_eq!(r.entry_count(), 0);
}

#[test]
fn wakes_run_in_order_right_after_the_call_that_made_them_and_skip_ended_entries() {
    /// On its timer, wakes `targets` in order, then notes that its call ends.
    struct Waker {
        log: Log,
        targets: Vec<getty_reactor::EntryId>,
    }
    impl Entry for Waker {
        type Command = NoCommand;

        fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
            cx.set_timer(Duration::from_millis(10), 0);
            Status::Continue
        }
        fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
            Status::Continue
        }
        fn on_timer(&mut self, _: &mut Context<'_>, _: u64) -> Status {
            for &target in &self.targets {
                assert!(getty_reactor::wake(target));
            }
            self.log.borrow_mut().push("waker:returns".into());
            Status::Done
        }
    }
    let log = Log::default();
    let mut r = Reactor::new().unwrap();
    let a = r.spawn(Recorder::new("a", &log)).id();
    let b = r.spawn(Recorder::new("b", &log)).id();
    let gone = r.spawn(Recorder::new("gone", &log));
    r.handle().send(gone, "stop").unwrap();
    r.spawn(Waker {
        log: log.clone(),
        targets: vec![a, gone.id(), b, a],
    });
    r.spawn(StopAfter(Duration::from_millis(50)));
    r.run().unwrap();
    let seen: Vec<String> = log
        .borrow()
        .iter()
        .filter(|l| !l.contains("start") && !l.contains("shutdown"))
        .cloned()
        .collect();
    assert_eq!(
        seen,
        [
            "gone:command stop",
            "waker:returns",
            "a:wake",
            "b:wake",
            "a:wake"
        ]
    );
}

#[test]
fn spawned_entries_start_after_the_call_that_spawned_them() {
    struct Parent {
        log: Log,
        child: Option<Recipient<&'static str>>,
    }
    impl Entry for Parent {
        type Command = NoCommand;

        fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
            self.log.borrow_mut().push("parent:start".into());
            let child = cx.spawn(Recorder::new("child", &self.log));
            cx.send(child, "hello");
            self.child = Some(child);
            self.log.borrow_mut().push("parent:spawned".into());
            Status::Continue
        }
        fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
            Status::Continue
        }
    }
    let log = Log::default();
    let mut r = Reactor::new().unwrap();
    r.spawn(Parent {
        log: log.clone(),
        child: None,
    });
    assert_eq!(
        *log.borrow(),
        [
            "parent:start",
            "parent:spawned",
            "child:start",
            "child:command hello"
        ]
    );
    drop(r);
    assert_eq!(
        log.borrow().last().map(String::as_str),
        Some("child:shutdown now"),
        "dropping a reactor ends its entries properly"
    );
}

/// The commands of a [`Tally`]: numbers to add, and a request for the sum.
enum TallyCommand {
    Add(u64),
    Report(mpsc::Sender<u64>),
}

/// A narrower command: what a [`Tally`]'s helpers may send it.
struct Add(u64);

impl From<Add> for TallyCommand {
    fn from(add: Add) -> Self {
        TallyCommand::Add(add.0)
    }
}

/// Sums what it is sent; hands out a narrowed address of itself to the thread it is
/// given, which only ever sees a `Recipient<Add>`.
struct Tally {
    sum: u64,
    helpers: mpsc::Sender<Recipient<Add>>,
}

impl Entry for Tally {
    type Command = TallyCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        assert!(cx.recipient::<Add>().is_none(), "Add is not its own type");
        let narrowed = cx
            .recipient_as::<Add, TallyCommand>()
            .expect("its own type");
        assert_eq!(narrowed.id(), cx.id());
        self.helpers.send(narrowed).unwrap();
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_command(&mut self, _: &mut Context<'_>, command: TallyCommand) -> Status {
        match command {
            TallyCommand::Add(n) => self.sum += n,
            TallyCommand::Report(to) => {
                let _ = to.send(self.sum);
            }
        }
        Status::Continue
    }
}

#[test]
fn a_narrowed_address_delivers_converted_commands_from_other_threads() {
    let (helpers_tx, helpers) = mpsc::channel();
    let (tally_tx, tally_rx) = mpsc::channel();
    let thread = Reactor::start_thread("tally", move |r| {
        let tally = r.spawn(Tally {
            sum: 0,
            helpers: helpers_tx,
        });
        tally_tx.send(tally).map_err(std::io::Error::other)
    })
    .unwrap();
    let step = Duration::from_secs(15);
    let tally = tally_rx.recv_timeout(step).expect("the tally's address");
    let add = helpers.recv_timeout(step).expect("the narrowed address");
    assert_eq!(add.id(), tally.id());
    let handle = thread.handle().clone();
    let senders: Vec<_> = (1..=4)
        .map(|n| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    handle.send(add, Add(n)).unwrap();
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    // Commands from one thread arrive in order, so this report comes after its adds.
    let (report_tx, report) = mpsc::channel();
    handle.send(tally, TallyCommand::Report(report_tx)).unwrap();
    assert_eq!(
        report.recv_timeout(step).expect("a report"),
        100 * (1 + 2 + 3 + 4)
    );
    handle.shutdown();
    thread.join().unwrap();
}

/// Spends `busy` in its start, as a long pass of the loop does.
struct SlowStart {
    busy: Duration,
}

impl Entry for SlowStart {
    type Command = NoCommand;

    fn on_start(&mut self, _: &mut Context<'_>) -> Status {
        std::thread::sleep(self.busy);
        Status::Done
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
}

/// Arms a timer of `delay` in its start and reports how long after that call it fired.
struct TimesItsTimer {
    delay: Duration,
    armed: Option<Instant>,
    fired_after: mpsc::Sender<Duration>,
}

impl Entry for TimesItsTimer {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        self.armed = Some(Instant::now());
        cx.set_timer(self.delay, 0);
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, _: u64) -> Status {
        let _ = self.fired_after.send(self.armed.unwrap().elapsed());
        cx.handle().shutdown();
        Status::Done
    }
}

/// Spawns its two entries in its start: they start one after the other in the same pass.
struct Launcher(Option<(SlowStart, TimesItsTimer)>);

impl Entry for Launcher {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let (slow, timed) = self.0.take().unwrap();
        cx.spawn(slow);
        cx.spawn(timed);
        Status::Done
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
}

/// A timer counts its delay from the call that set it, not from the start of the loop's
/// pass: set after another entry spent 100 ms of the same pass, a 150 ms timer fired 50 ms
/// after it was set when it counted from the pass's clock.
#[test]
fn a_timer_set_late_in_a_long_pass_counts_from_when_it_was_set() {
    let (tx, rx) = mpsc::channel();
    let mut r = Reactor::new().unwrap();
    let delay = Duration::from_millis(150);
    r.spawn(Launcher(Some((
        SlowStart {
            busy: Duration::from_millis(100),
        },
        TimesItsTimer {
            delay,
            armed: None,
            fired_after: tx,
        },
    ))));
    r.run().unwrap();
    let fired_after = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        fired_after >= delay,
        "a {delay:?} timer fired {fired_after:?} after it was set"
    );
}

/// Arms a timer of `delay`, then keeps the loop busy for `busy` (longer), in its start or,
/// `in_turn`, in the turn a first timer of 1 ms fires in: reports how long after it was
/// armed the timer fired.
struct ArmsThenBusy {
    in_turn: bool,
    delay: Duration,
    busy: Duration,
    armed: Option<Instant>,
    fired_after: mpsc::Sender<Duration>,
}

impl ArmsThenBusy {
    fn arm_then_work(&mut self, cx: &mut Context<'_>) {
        self.armed = Some(Instant::now());
        cx.set_timer(self.delay, 1);
        std::thread::sleep(self.busy);
    }
}

impl Entry for ArmsThenBusy {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        if self.in_turn {
            cx.set_timer(Duration::from_millis(1), 0);
        } else {
            self.arm_then_work(cx);
        }
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status {
        if tag == 0 {
            self.arm_then_work(cx);
            return Status::Continue;
        }
        let _ = self.fired_after.send(self.armed.unwrap().elapsed());
        cx.handle().shutdown();
        Status::Done
    }
}

/// The poll after long work waits only until the next deadline as the clock reads after
/// that work: a 700 ms timer armed just before 600 ms of work fires about 700 ms after it
/// was armed, whether the work was done in a turn or before the loop ran (in `spawn`).
/// Counted from a clock read before the work (the turn's start, or the spawn), the poll
/// would wait the whole 700 ms again and the timer fire about 1.3 s after.
#[test]
fn the_poll_after_long_work_waits_from_the_works_end() {
    for in_turn in [true, false] {
        let (tx, rx) = mpsc::channel();
        let mut r = Reactor::new().unwrap();
        let delay = Duration::from_millis(700);
        r.spawn(ArmsThenBusy {
            in_turn,
            delay,
            busy: Duration::from_millis(600),
            armed: None,
            fired_after: tx,
        });
        r.run().unwrap();
        let fired_after = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            fired_after >= delay && fired_after < Duration::from_millis(1100),
            "a {delay:?} timer fired {fired_after:?} after it was set (in a turn: {in_turn})"
        );
    }
}

/// Keeps the loop busy: each turn one call of `work`, until `stop` is set; counts its calls.
struct BusyTurns {
    work: Duration,
    stop: Rc<std::cell::Cell<bool>>,
    calls: Rc<std::cell::Cell<u32>>,
    /// Goes on through a graceful shutdown, until the grace runs out.
    stubborn: bool,
}

impl Entry for BusyTurns {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.reschedule(Ready::READABLE);
        Status::Continue
    }
    fn on_ready(&mut self, cx: &mut Context<'_>, _: Ready) -> Status {
        if self.stop.get() {
            cx.handle().shutdown();
            return Status::Done;
        }
        self.calls.set(self.calls.get() + 1);
        std::thread::sleep(self.work);
        cx.reschedule(Ready::READABLE);
        Status::Continue
    }
    fn on_shutdown(&mut self, _: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        if self.stubborn && deadline.is_some() {
            Status::Continue
        } else {
            Status::Done
        }
    }
}

/// Arms a timer of `delay` in its start; when it fires, reports how many busy calls came
/// before and stops the busy entry.
struct StopsOnTimer {
    delay: Duration,
    stop: Rc<std::cell::Cell<bool>>,
    calls: Rc<std::cell::Cell<u32>>,
    calls_before: mpsc::Sender<u32>,
}

impl Entry for StopsOnTimer {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.set_timer(self.delay, 0);
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_timer(&mut self, _: &mut Context<'_>, _: u64) -> Status {
        let _ = self.calls_before.send(self.calls.get());
        self.stop.set(true);
        Status::Done
    }
}

/// A timer that falls due during a turn's work fires at the end of that turn, not after
/// the next turn's work: a 50 ms timer, with every turn one call of 100 ms, fires after
/// the first call. (Fired by the clock read before that call, it waited for a second.)
#[test]
fn a_timer_due_during_a_turn_fires_at_its_end() {
    let (tx, rx) = mpsc::channel();
    let stop = Rc::new(std::cell::Cell::new(false));
    let calls = Rc::new(std::cell::Cell::new(0));
    let mut r = Reactor::new().unwrap();
    r.spawn(StopsOnTimer {
        delay: Duration::from_millis(50),
        stop: stop.clone(),
        calls: calls.clone(),
        calls_before: tx,
    });
    r.spawn(BusyTurns {
        work: Duration::from_millis(100),
        stop,
        calls,
        stubborn: false,
    });
    r.run().unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
}

/// A grace that runs out during a turn's work ends the drain at the end of that turn: 50 ms
/// of grace, asked for in the first turn, with every turn one call of 100 ms of an entry
/// that does not stop, ends after the second call.
#[test]
fn a_grace_that_runs_out_during_a_turn_ends_the_drain_at_its_end() {
    let calls = Rc::new(std::cell::Cell::new(0));
    let mut r = Reactor::new().unwrap();
    r.spawn(BusyTurns {
        work: Duration::from_millis(100),
        stop: Rc::new(std::cell::Cell::new(false)),
        calls: calls.clone(),
        stubborn: true,
    });
    r.handle()
        .shutdown_graceful(Duration::from_millis(50))
        .unwrap();
    r.run().unwrap();
    assert_eq!(calls.get(), 2);
}

/// Readable at the first poll; its `on_ready` reports the clock it was given and the
/// time it was called, then keeps the loop busy for `busy`.
struct SlowReader {
    socket: mio::net::UdpSocket,
    busy: Duration,
    seen: mpsc::Sender<(Instant, Instant)>,
    /// The readers still to be called: the last one stops the loop.
    left: Rc<std::cell::Cell<u32>>,
}

impl Entry for SlowReader {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let token = cx.token();
        cx.registry()
            .register(&mut self.socket, token, mio::Interest::READABLE)
            .unwrap();
        Status::Continue
    }
    fn on_ready(&mut self, cx: &mut Context<'_>, _: Ready) -> Status {
        let _ = self.seen.send((cx.now(), Instant::now()));
        std::thread::sleep(self.busy);
        let _ = self.seen.send((cx.now(), Instant::now()));
        self.left.set(self.left.get() - 1);
        if self.left.get() == 0 {
            cx.handle().shutdown();
        }
        Status::Done
    }
}

/// `cx.now()` is the time the current event's dispatch began, not the start of the pass:
/// of two entries readable at the same poll, the second is called after the first kept the
/// loop busy for 100 ms, and a read idle time or write stall it stamps with `now` would be
/// that much too early. When `now` was read once per pass, the second entry was given the
/// time the first one started.
#[test]
fn each_event_is_given_the_time_its_dispatch_began() {
    let (tx, rx) = mpsc::channel();
    let mut r = Reactor::new().unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let left = Rc::new(std::cell::Cell::new(2));
    for _ in 0..2 {
        let socket = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        sender
            .send_to(b"ready", socket.local_addr().unwrap())
            .unwrap();
        r.spawn(SlowReader {
            socket,
            busy: Duration::from_millis(100),
            seen: tx.clone(),
            left: left.clone(),
        });
    }
    // Both datagrams are queued before the loop polls (loopback delivers at once), so one
    // poll returns both events.
    r.run().unwrap();
    let seen: Vec<(Instant, Instant)> = rx.try_iter().collect();
    assert_eq!(seen.len(), 4, "both entries were called");
    let (first_done, second_now, second_called) = (seen[1].1, seen[2].0, seen[2].1);
    assert!(
        second_now >= first_done,
        "the second event was given a clock {:?} older than its call",
        second_called - second_now
    );
}

/// Reports the clock it was given and the time it was called, for a command and for each
/// of two timers armed for the same moment; the first timer keeps the loop busy.
struct ClockWitness {
    busy: Duration,
    seen: mpsc::Sender<(&'static str, Instant, Instant)>,
    timers_left: u32,
}

impl Entry for ClockWitness {
    type Command = u8;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let at = Instant::now() + Duration::from_millis(50);
        cx.set_timer_at(at, 1);
        cx.set_timer_at(at, 2);
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_command(&mut self, cx: &mut Context<'_>, _: u8) -> Status {
        let _ = self.seen.send(("command", cx.now(), Instant::now()));
        Status::Continue
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status {
        let _ = self.seen.send(("timer", cx.now(), Instant::now()));
        if tag == 1 {
            std::thread::sleep(self.busy);
        }
        self.timers_left -= 1;
        if self.timers_left == 0 {
            cx.handle().shutdown();
        }
        Status::Continue
    }
}

/// Commands and timers are given the time their call began too: a command applied after a
/// slow job of the same batch, and a timer fired after another timer's slow callback, were
/// given the turn's start, 100 ms before they ran (a write stall counted from a write such
/// a command made fired that much early).
#[test]
fn commands_and_timers_are_given_the_time_their_call_began() {
    let (tx, rx) = mpsc::channel();
    let mut r = Reactor::new().unwrap();
    let busy = Duration::from_millis(100);
    let witness = r.spawn(ClockWitness {
        busy,
        seen: tx,
        timers_left: 2,
    });
    let handle = r.handle().clone();
    // One batch: a job that keeps the loop busy, then a command.
    handle.execute(move |_| std::thread::sleep(busy)).unwrap();
    handle.send(witness, 7u8).unwrap();
    r.run().unwrap();
    let seen: Vec<_> = rx.try_iter().collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (what, given, called) in seen {
        let behind = called - given;
        assert!(
            behind < Duration::from_millis(50),
            "a {what} was given a clock {behind:?} older than its call"
        );
    }
}
