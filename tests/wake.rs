//! Hostile checks of `getty_reactor::wake` / `Entry::on_wake`: a wake is answered right
//! after the call that woke it returns, but an entry that wakes itself again from
//! `on_wake` must not keep the loop from polling, firing a timer or running anyone else
//! (it once did: a 10 ms timer fired after 2 s, behind ten million `on_wake` calls).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use getty::reactor::{Context, Entry, EntryId, NoCommand, Ready, Status};
use getty::Reactor;

/// Wakes itself from every `on_wake` until `until`, counting the calls.
struct Restless {
    until: Instant,
    calls: Rc<Cell<u64>>,
}

impl Entry for Restless {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.set_timer(Duration::from_millis(1), 0);
        Status::Continue
    }

    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _: u64) -> Status {
        getty::reactor::wake(cx.id());
        Status::Continue
    }

    fn on_wake(&mut self, cx: &mut Context<'_>) -> Status {
        self.calls.set(self.calls.get() + 1);
        if Instant::now() < self.until {
            getty::reactor::wake(cx.id());
        }
        Status::Continue
    }
}

/// Notes when its 10 ms timer fires, then stops the reactor.
struct Alarm {
    began: Instant,
    fired_after: Rc<Cell<Option<Duration>>>,
}

impl Entry for Alarm {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.set_timer(Duration::from_millis(10), 0);
        Status::Continue
    }

    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _: u64) -> Status {
        self.fired_after.set(Some(self.began.elapsed()));
        cx.handle().shutdown();
        Status::Done
    }
}

#[test]
fn an_entry_that_wakes_itself_from_on_wake_does_not_hold_back_a_timer() {
    const RESTLESS_FOR: Duration = Duration::from_secs(2);
    let mut reactor = Reactor::new().unwrap();
    let began = Instant::now();
    let calls = Rc::new(Cell::new(0));
    let fired_after = Rc::new(Cell::new(None));
    let _restless: EntryId = reactor
        .spawn(Restless {
            until: began + RESTLESS_FOR,
            calls: calls.clone(),
        })
        .id();
    reactor.spawn(Alarm {
        began,
        fired_after: fired_after.clone(),
    });
    reactor.run().unwrap();
    let fired = fired_after.get().expect("the alarm fired");
    println!(
        "a 10 ms timer fired after {fired:?}; the restless entry was called {} times",
        calls.get()
    );
    assert!(
        fired < Duration::from_millis(500),
        "a 10 ms timer waited {fired:?} for an entry that kept waking itself"
    );
}
