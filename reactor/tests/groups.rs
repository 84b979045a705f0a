//! Entry groups: an index is freed when the group's owner ends, and reused; an id kept past
//! its group's end never reaches a later group.

use std::cell::RefCell;
use std::rc::Rc;

use getty_reactor::{Context, Entry, GroupId, Reactor, Ready, Recipient, Status};

/// More owners than there are 16-bit group indexes.
const OWNERS: usize = 70_000;

/// The one command a probe takes: it ends the probe.
struct End;

/// Runs a closure in its `on_start`, then stays (`Continue`) or ends (`Done`), as told; a
/// command ends it.
struct Probe<F> {
    run: Option<F>,
    stay: bool,
}

impl<F: FnOnce(&mut Context<'_>) + 'static> Entry for Probe<F> {
    type Command = End;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        if let Some(run) = self.run.take() {
            run(cx);
        }
        if self.stay {
            Status::Continue
        } else {
            Status::Done
        }
    }

    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }

    fn on_command(&mut self, _: &mut Context<'_>, _: End) -> Status {
        Status::Done
    }
}

fn probe(stay: bool, run: impl FnOnce(&mut Context<'_>) + 'static) -> impl Entry<Command = End> {
    Probe {
        run: Some(run),
        stay,
    }
}

/// An entry that does nothing: stays until a command ends it, or ends at once.
fn idle(stay: bool) -> impl Entry<Command = End> {
    probe(stay, |_| {})
}

/// Runs `f` on the reactor in a short-lived entry and returns what it answers.
fn on_reactor<T: 'static>(
    reactor: &mut Reactor,
    f: impl FnOnce(&mut Context<'_>) -> T + 'static,
) -> T {
    let out = Rc::new(RefCell::new(None));
    let slot = out.clone();
    reactor.spawn(probe(false, move |cx| *slot.borrow_mut() = Some(f(cx))));
    let answer = out.borrow_mut().take();
    answer.expect("the probe ran")
}

fn sorted(mut ids: Vec<Recipient<End>>) -> Vec<Recipient<End>> {
    ids.sort_by_key(|member| (member.id().token().0, member.id().serial()));
    ids
}

#[test]
fn group_ids_are_reused_after_their_owners_end() {
    let mut reactor = Reactor::new().unwrap();

    // A long-lived owner with one member: its group must survive all the churn below.
    let keeper = Rc::new(RefCell::new(None::<(GroupId<End>, Recipient<End>)>));
    let k = keeper.clone();
    reactor.spawn(probe(true, move |cx| {
        let group = cx.new_group::<End>().expect("a first group");
        let member = cx.spawn_in(group, idle(true));
        *k.borrow_mut() = Some((group, member));
    }));
    let (kept_group, kept_member) = keeper.borrow().unwrap();

    // An owner that ends at once, leaving a member behind (as a server that stopped
    // accepting while its sessions run on): its group ends, the member lives on.
    let first = Rc::new(RefCell::new(None::<(GroupId<End>, Recipient<End>)>));
    let f = first.clone();
    reactor.spawn(probe(false, move |cx| {
        let group = cx.new_group::<End>().expect("a second group");
        let member = cx.spawn_in(group, idle(true));
        *f.borrow_mut() = Some((group, member));
    }));
    let (stale_group, orphan) = first.borrow().unwrap();
    assert!(reactor.entry_count() >= 3);

    // Start and stop more grouped owners than there are indexes: each must get a group
    // that finds exactly its own members (not the orphan, not the keeper's member), and
    // the keeper's group must not be handed out again while the keeper lives.
    let failures = Rc::new(RefCell::new(Vec::<String>::new()));
    for round in 0..OWNERS {
        let log = failures.clone();
        reactor.spawn(probe(false, move |cx| {
            let Some(group) = cx.new_group::<End>() else {
                log.borrow_mut().push(format!("round {round}: no group"));
                return;
            };
            let a = cx.spawn_in(group, idle(false));
            let b = cx.spawn_in(group, idle(false));
            let members = sorted(cx.group_members(group));
            if members != sorted(vec![a, b]) {
                log.borrow_mut().push(format!(
                    "round {round}: members {members:?}, want {a:?} {b:?}"
                ));
            }
            if cx.group_members(kept_group) != vec![kept_member] {
                log.borrow_mut()
                    .push(format!("round {round}: the keeper's group changed"));
            }
        }));
        if failures.borrow().len() > 5 {
            break;
        }
    }
    let failures = failures.borrow();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );

    // The churn left nothing behind but the keeper, its member and the orphan.
    assert_eq!(reactor.entry_count(), 3);

    // A new owner that stays: its group finds its members; the stale id of the ended
    // group finds nothing (though its index was reused many times), and what is spawned
    // into it joins no group.
    let end = on_reactor(&mut reactor, move |cx| {
        let group = cx.new_group::<End>().expect("a group after the churn");
        let members: Vec<Recipient<End>> = (0..3).map(|_| cx.spawn_in(group, idle(true))).collect();
        let stray = cx.spawn_in(stale_group, idle(true));
        (
            members,
            sorted(cx.group_members(group)),
            cx.group_members(stale_group),
            stray,
            cx.group_members(kept_group),
        )
    });
    let (members, found, stale_found, stray, kept_found) = end;
    assert_eq!(found, sorted(members.clone()));
    assert!(!found.contains(&orphan) && !found.contains(&stray));
    assert!(stale_found.is_empty(), "stale id found {stale_found:?}");
    assert_eq!(kept_found, vec![kept_member]);
}

#[test]
fn indexes_run_out_only_while_all_groups_live() {
    let mut reactor = Reactor::new().unwrap();
    // 65,535 owners that stay, each with a group.
    let owners = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..u16::MAX {
        let owners = owners.clone();
        reactor.spawn(probe(true, move |cx| {
            let group = cx.new_group::<End>().expect("a free index");
            let me = cx.recipient::<End>().expect("a probe takes End");
            owners.borrow_mut().push((me, group));
        }));
    }
    assert_eq!(owners.borrow().len(), usize::from(u16::MAX));
    assert!(on_reactor(&mut reactor, |cx| cx.new_group::<End>()).is_none());

    // End one owner (a command ends a probe): its index is free again, and the new group
    // that takes it is not the old one.
    let (victim, old_group) = owners.borrow()[1000];
    on_reactor(&mut reactor, move |cx| cx.send(victim, End));
    assert_eq!(reactor.entry_count(), usize::from(u16::MAX) - 1);
    // The owner of the new group stays, so the index is taken again.
    let seen = Rc::new(RefCell::new(None));
    let out = seen.clone();
    let fresh_owner = reactor.spawn(probe(true, move |cx| {
        let fresh = cx.new_group::<End>().expect("the freed index");
        let m = cx.spawn_in(fresh, idle(true));
        *out.borrow_mut() = Some((
            fresh,
            m,
            cx.group_members(fresh),
            cx.group_members(old_group),
        ));
    }));
    let (fresh, m, found, old_members) = seen.borrow_mut().take().unwrap();
    assert_ne!(fresh, old_group);
    assert_eq!(found, vec![m]);
    assert!(old_members.is_empty());
    assert!(on_reactor(&mut reactor, |cx| cx.new_group::<End>()).is_none());

    // Its member outliving it does not keep the group: once the owner ends, the index is
    // free, and the next group does not see that member.
    on_reactor(&mut reactor, move |cx| cx.send(fresh_owner, End));
    let (next, next_members) = on_reactor(&mut reactor, move |cx| {
        let next = cx.new_group::<End>().expect("freed by the owner's end");
        (next, cx.group_members(next))
    });
    assert_ne!(next, fresh);
    assert!(next_members.is_empty(), "{next_members:?}");
}
