//! The store's tests, each run on SQLite and on PostgreSQL (`LONGPROTO_TEST_POSTGRES`:
//! the URL of a server where the tests may create databases; ./tools/test.sh starts
//! one). Every PostgreSQL test has a database of its own.
use super::*;
use device_node::Command as C;
use prometheus_client::metrics::counter::Counter;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A store on a backend, and how to open it again.
struct Fixture {
    url: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/sub/bridge.db", dir.path().display()),
            Backend::Postgres => fresh_database().await,
        };
        Fixture { url, _dir: dir }
    }

    async fn open(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }

    async fn open_counting(&self, commits: Counter) -> Store {
        let store = Store::connect(&self.url, commits).await.unwrap();
        if let Store::Postgres(pg) = &store {
            pg.wait_for_lock(|_| {}).await;
            pg.migrate().await.unwrap();
        }
        store
    }
}

/// A new, empty database on the test server.
async fn fresh_database() -> String {
    use sqlx::Connection;
    let base = std::env::var("LONGPROTO_TEST_POSTGRES").expect(
        "LONGPROTO_TEST_POSTGRES is not set: the store's tests run on PostgreSQL too; \
         ./tools/test.sh starts one (or: url=$(./tools/postgres.sh start DIR | tail -n 1))",
    );
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&name);
    url.to_string()
}

impl Store {
    async fn execute(&self, sql: &str) {
        match self {
            Store::Sqlite(s) => s.execute(sql).await.unwrap(),
            Store::Postgres(s) => s.execute(sql).await.unwrap(),
        }
    }
}

/// `async fn name(backend)` as one test per backend, in a module of that name.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

on_both!(
    a_request_counter_only_moves_up,
    counters_increase_per_device_and_ids_are_idempotent,
    creations_arriving_together_share_one_commit_and_keep_every_rule,
    counters_wrap_at_65536_inside_a_group_and_go_on_after_it,
    a_creation_the_database_refuses_fails_alone,
    a_journal_entry_moves_only_commands_unchanged_since_its_window,
    device_facts_are_read_for_many_devices_at_once,
    queued_commands_load_and_scheduling_is_guarded_by_state,
    transitions_are_guarded_and_kept_across_reopen,
    daily_quota,
    batches_history_and_event_bookkeeping,
);

async fn a_request_counter_only_moves_up(backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = f.open().await;
    let d = DeviceId::parse("cellular", "cafe01").unwrap();
    assert!(s.advance_request_counter(&d, 5).await.unwrap());
    assert!(!s.advance_request_counter(&d, 5).await.unwrap());
    assert!(!s.advance_request_counter(&d, 4).await.unwrap());
    assert!(s.advance_request_counter(&d, 6).await.unwrap());
    assert!(s.advance_request_counter(&d, u32::MAX).await.unwrap());
    let other = DeviceId::parse("cellular", "cafe02").unwrap();
    assert!(s.advance_request_counter(&other, 1).await.unwrap());
    // an SMS's counter is checked apart: a late SMS is not a replay of a later poll;
    // SMS overtaking each other are taken once each, within 32 counters
    assert!(s.advance_sms_counter(&d, 3).await.unwrap());
    assert!(!s.advance_sms_counter(&d, 3).await.unwrap());
    assert!(s.advance_sms_counter(&d, 9).await.unwrap());
    assert!(
        s.advance_sms_counter(&d, 7).await.unwrap(),
        "overtaken by 9"
    );
    assert!(!s.advance_sms_counter(&d, 7).await.unwrap());
    assert!(!s.advance_sms_counter(&d, 9).await.unwrap());
    assert!(s.advance_sms_counter(&d, 40).await.unwrap());
    assert!(
        s.advance_sms_counter(&d, 10).await.unwrap(),
        "30 below, never seen: taken"
    );
    assert!(
        !s.advance_sms_counter(&d, 9).await.unwrap(),
        "31 below, seen: still remembered"
    );
    assert!(
        !s.advance_sms_counter(&d, 8).await.unwrap(),
        "32 below: too old"
    );
}

fn dev(id: &str) -> DeviceId {
    DeviceId::parse("lorawan", id).unwrap()
}

fn new(device: &DeviceId, command: C, id: Option<&str>) -> NewCommand {
    NewCommand {
        id: id.map(Into::into),
        device: device.clone(),
        command,
        confirmed: true,
        ttl_ms: 60_000,
        origin: Origin::Token("test".into()),
        batch_id: None,
    }
}

async fn counters_increase_per_device_and_ids_are_idempotent(backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = f.open().await;
    let a = dev("0000000000000001");
    let b = dev("0000000000000002");
    let Created::New(c1, e, 1) = s.create(new(&a, C::Locate, None), 1000).await.unwrap() else {
        panic!()
    };
    assert_eq!((c1.counter, e.state), (1, CommandState::Queued));
    let Created::New(c2, _, 2) = s.create(new(&a, C::Lock, Some("k1")), 1001).await.unwrap() else {
        panic!()
    };
    assert_eq!(c2.counter, 2);
    let Created::New(c3, _, 1) = s.create(new(&b, C::Lock, None), 1002).await.unwrap() else {
        panic!()
    };
    assert_eq!(c3.counter, 1, "counters are per device");
    let Created::Existing(again) = s.create(new(&a, C::Lock, Some("k1")), 1003).await.unwrap()
    else {
        panic!("the same id twice created two commands")
    };
    assert_eq!(again, c2);
    assert!(matches!(
        s.create(new(&b, C::Lock, Some("k1")), 1004).await,
        Err(StoreError::IdConflict { .. })
    ));
    // the same id for another command of the same device is refused, not answered
    // with the stored one
    assert!(matches!(
        s.create(new(&a, C::Reboot { delay_s: 1 }, Some("k1")), 1005)
            .await,
        Err(StoreError::IdReused { .. })
    ));
    assert_eq!(s.pending_count(&a).await.unwrap(), 2);
}

/// Every future's output, in order; each is first polled in order, in one pass.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => all = false,
                }
            }
        }
        if all { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

// The tests below run on tokio's current-thread runtime: `join_all` sends every
// creation before the commit task first runs, so they all arrive as one group.

async fn creations_arriving_together_share_one_commit_and_keep_every_rule(backend: Backend) {
    let f = Fixture::new(backend).await;
    let commits = Counter::default();
    let s = f.open_counting(commits.clone()).await;
    let a = dev("0000000000000001");
    let b = dev("0000000000000002");
    let mut news: Vec<NewCommand> = (0..40).map(|_| new(&a, C::Locate, None)).collect();
    news.push(new(&a, C::Lock, Some("k1")));
    // the same id again in the same group: the command stored a moment before
    news.push(new(&a, C::Lock, Some("k1")));
    // the same id for another device: refused, and nothing else is
    news.push(new(&b, C::Lock, Some("k1")));
    news.push(new(&b, C::Lock, None));
    let outcomes = join_all(news.into_iter().map(|n| s.create(n, 1000))).await;
    assert_eq!(
        commits.get(),
        1,
        "44 creations arriving together took {} commits",
        commits.get()
    );

    // the device's pending count as the group's transaction saw it: all 41
    let counters: Vec<u16> = outcomes[..41]
        .iter()
        .map(|o| match o {
            Ok(Created::New(c, _, 41)) => c.counter,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        counters,
        (1..=41).collect::<Vec<u16>>(),
        "counters in arrival order"
    );
    let Ok(Created::Existing(again)) = &outcomes[41] else {
        panic!("{:?}", outcomes[41])
    };
    assert_eq!((again.id.as_str(), again.counter), ("k1", 41));
    assert!(matches!(&outcomes[42], Err(StoreError::IdConflict { .. })));
    let Ok(Created::New(lone, _, 1)) = &outcomes[43] else {
        panic!("{:?}", outcomes[43])
    };
    assert_eq!(lone.counter, 1);

    // on disk: reopened, every stored command is there
    drop(s);
    let s = f.open().await;
    assert_eq!(s.pending_count(&a).await.unwrap(), 41);
    assert_eq!(s.pending_count(&b).await.unwrap(), 1);
    assert_eq!(s.get("k1").await.unwrap().unwrap().0.command, C::Lock);
}

async fn counters_wrap_at_65536_inside_a_group_and_go_on_after_it(backend: Backend) {
    let f = Fixture::new(backend).await;
    let commits = Counter::default();
    let s = f.open_counting(commits.clone()).await;
    let a = dev("0000000000000001");
    s.execute(&format!(
        "INSERT INTO devices (device, next_counter) VALUES ('{a}', 65534)"
    ))
    .await;
    let counter = |o: &R<Created>| match o {
        Ok(Created::New(c, _, _)) => c.counter,
        other => panic!("{other:?}"),
    };
    let group = join_all((0..4).map(|_| s.create(new(&a, C::Locate, None), 1000))).await;
    assert_eq!(commits.get(), 1);
    let counters: Vec<u16> = group.iter().map(counter).collect();
    assert_eq!(counters, [65534, 65535, 0, 1]);
    let after = s.create(new(&a, C::Locate, None), 1001).await;
    assert_eq!(counter(&after), 2);
}

async fn a_creation_the_database_refuses_fails_alone(backend: Backend) {
    let f = Fixture::new(backend).await;
    let commits = Counter::default();
    let s = f.open_counting(commits.clone()).await;
    // a database error for one id only, raised inside the group's transaction
    s.execute(match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER poison BEFORE INSERT ON commands WHEN NEW.id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned command'); END"
        }
        Backend::Postgres => {
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'poisoned command'; END $$; \
             CREATE TRIGGER poison BEFORE INSERT ON commands FOR EACH ROW \
             WHEN (NEW.id = 'poison') EXECUTE FUNCTION poison()"
        }
    })
    .await;
    let a = dev("0000000000000001");
    let ids = ["c1", "c2", "poison", "c3"];
    let creations = ids
        .iter()
        .map(|id| s.create(new(&a, C::Locate, Some(id)), 1000));
    let outcomes = join_all(creations).await;
    let Err(StoreError::Db(e)) = &outcomes[2] else {
        panic!("{:?}", outcomes[2])
    };
    assert!(e.to_string().contains("poisoned command"), "{e}");
    // one by one: each counts the device's pending commands after itself
    for (i, id, pending) in [(0, "c1", 1), (1, "c2", 2), (3, "c3", 3)] {
        let Ok(Created::New(c, _, n)) = &outcomes[i] else {
            panic!("{id}: {:?}", outcomes[i])
        };
        assert_eq!((c.id.as_str(), *n), (id, pending));
        assert!(s.get(id).await.unwrap().is_some(), "{id} is not stored");
    }
    assert!(s.get("poison").await.unwrap().is_none());
    // the group failed as a whole, then each was committed alone
    assert_eq!(commits.get(), 3);
    assert_eq!(s.pending_count(&a).await.unwrap(), 3);
}

async fn a_journal_entry_moves_only_commands_unchanged_since_its_window(backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = f.open().await;
    let a = dev("0000000000000001");
    s.create(new(&a, C::Locate, Some("nacked")), 1000)
        .await
        .unwrap();
    s.create(new(&a, C::Lock, Some("lost")), 1000)
        .await
        .unwrap();
    let pair = |id: &str| [(id.to_owned(), id.to_owned())];
    // "nacked": its window was stored, then a NACK put it back in the queue
    s.mark_scheduled(&pair("nacked"), 2000).await.unwrap();
    let back = [CommandState::Scheduled];
    s.transition("nacked", &back, CommandState::Queued, None, 3000)
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.replay_scheduled(&pair("nacked"), 2000)
            .await
            .unwrap()
            .is_empty(),
        "a stale journal entry moved a command queued again after its window"
    );
    // "lost": its window was handed over and never stored
    let done = s.replay_scheduled(&pair("lost"), 2500).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].0.state, done[0].1.at),
        (CommandState::Scheduled, 2500)
    );
    assert!(
        s.replay_scheduled(&pair("lost"), 2600)
            .await
            .unwrap()
            .is_empty(),
        "applied twice"
    );
    let (nacked, _) = s.get("nacked").await.unwrap().unwrap();
    assert_eq!(nacked.state, CommandState::Queued);
}

async fn device_facts_are_read_for_many_devices_at_once(backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = f.open().await;
    let (a, b, c) = (
        dev("70b3d57e00000001"),
        dev("70b3d57e00000002"),
        dev("70b3d57e00000003"),
    );
    s.set_device_facts(&[
        (a.clone(), "app-1".into(), DeviceClass::C),
        (b.clone(), "app-2".into(), DeviceClass::A),
    ])
    .await
    .unwrap();
    let mut got = s.device_facts(&[a.clone(), b.clone(), c]).await.unwrap();
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        vec![
            (a, "app-1".to_owned(), DeviceClass::C),
            (b, "app-2".to_owned(), DeviceClass::A)
        ]
    );
    assert!(s.device_facts(&[]).await.unwrap().is_empty());
}

async fn queued_commands_load_and_scheduling_is_guarded_by_state(backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = f.open().await;
    let a = dev("0000000000000001");
    let b = dev("0000000000000002");
    for (d, c, id) in [
        (&a, C::Locate, "locate"),
        (&a, C::Unlock { auto_relock_s: 0 }, "unlock"),
        (&b, C::Lock, "lock"),
    ] {
        s.create(new(d, c, Some(id)), 1000).await.unwrap();
    }
    let q = s.queued_commands().await.unwrap();
    let mut ids: Vec<(&str, bool)> = q
        .iter()
        .map(|c| (c.command.id.as_str(), c.urgent))
        .collect();
    ids.sort();
    assert_eq!(ids, [("locate", false), ("lock", true), ("unlock", true)]);
    assert!(q.iter().all(|c| c.seq > 0));

    s.transition(
        "lock",
        &[CommandState::Queued],
        CommandState::Cancelled,
        None,
        1500,
    )
    .await
    .unwrap();
    let taken = [
        ("unlock".to_owned(), "unlock".to_owned()),
        ("locate".to_owned(), "unlock".to_owned()),
        ("lock".to_owned(), "lock".to_owned()),
    ];
    let done = s.mark_scheduled(&taken, 2000).await.unwrap();
    let mut ids: Vec<&str> = done.iter().map(|(c, _)| c.id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["locate", "unlock"],
        "a cancelled command stays cancelled"
    );
    assert!(done.iter().all(|(c, e)| c.state == CommandState::Scheduled
        && c.network_ref.as_deref() == Some("unlock")
        && c.attempts == 1
        && e.attempt == Some(1)));
    assert!(
        s.mark_scheduled(&taken, 2001).await.unwrap().is_empty(),
        "only queued commands move"
    );
    assert_eq!(s.by_network_ref("unlock").await.unwrap().len(), 2);
    assert!(s.queued_commands().await.unwrap().is_empty());
    let (_, history) = s.get("locate").await.unwrap().unwrap();
    assert_eq!(
        history.iter().map(|h| h.state).collect::<Vec<_>>(),
        [CommandState::Queued, CommandState::Scheduled]
    );
}

async fn transitions_are_guarded_and_kept_across_reopen(backend: Backend) {
    let f = Fixture::new(backend).await;
    let a = dev("0000000000000001");
    {
        let s = f.open().await;
        s.create(new(&a, C::Lock, Some("x")), 1).await.unwrap();
        assert!(
            s.transition("x", &[CommandState::Scheduled], CommandState::Sent, None, 2)
                .await
                .unwrap()
                .is_none()
        );
        let (c, e) = s
            .transition(
                "x",
                &[CommandState::Queued],
                CommandState::Cancelled,
                Some("by the API"),
                3,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.state, e.reason.as_deref()),
            (CommandState::Cancelled, Some("by the API"))
        );
    }
    let s = f.open().await;
    let (c, history) = s.get("x").await.unwrap().unwrap();
    assert_eq!(c.state, CommandState::Cancelled);
    assert_eq!(history.len(), 2);
    assert_eq!(
        s.list(&a, Some(CommandState::Cancelled), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.list(&a, Some(CommandState::Queued), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn daily_quota(backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = f.open().await;
    let d = DeviceId::parse("sigfox", "1a2b3c").unwrap();
    assert!(s.take_daily_quota(&d, 100, 2).await.unwrap());
    assert!(s.take_daily_quota(&d, 100, 2).await.unwrap());
    assert!(!s.take_daily_quota(&d, 100, 2).await.unwrap());
    s.return_daily_quota(&d, 100).await.unwrap();
    assert!(s.take_daily_quota(&d, 100, 2).await.unwrap());
    assert!(
        s.take_daily_quota(&d, 101, 2).await.unwrap(),
        "a new day, a new quota"
    );
}

async fn batches_history_and_event_bookkeeping(backend: Backend) {
    let f = Fixture::new(backend).await;
    let s = f.open().await;
    let (a, b) = (dev("0000000000000001"), dev("0000000000000002"));
    let sigfox = DeviceId::parse("sigfox", "1a2b3c").unwrap();
    // a command to a group: every device's, all at once; the batch id once only
    let mut news = vec![new(&b, C::Lock, None), new(&a, C::Lock, None)];
    for n in &mut news {
        n.batch_id = Some("b1".into());
    }
    let done = s.create_batch("b1", news.clone(), 1000).await.unwrap();
    let done = done.expect("a new batch");
    assert!(done.iter().all(|o| matches!(o, Ok(Created::New(..)))));
    assert!(s.create_batch("b1", news, 1001).await.unwrap().is_none());
    assert_eq!(s.batch_devices("b1").await.unwrap(), [a.clone(), b.clone()]);
    assert_eq!(
        s.batch_counts("b1").await.unwrap(),
        [(CommandState::Queued, 2)]
    );
    assert!(s.batch_counts("nope").await.unwrap().is_empty());

    // the undelivered, by network and age; the latest by counter
    s.create(new(&sigfox, C::Locate, Some("sf")), 2000)
        .await
        .unwrap();
    let lorawan = s.undelivered_before(Network::Lorawan, 1500).await.unwrap();
    assert_eq!(lorawan.len(), 2);
    assert!(lorawan.iter().all(|c| c.device.network == Network::Lorawan));
    let sf = s.undelivered_before(Network::Sigfox, 2000).await.unwrap();
    assert_eq!(sf.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["sf"]);
    assert!(
        s.undelivered_before(Network::Sigfox, 1999)
            .await
            .unwrap()
            .is_empty()
    );
    let first_of_a = s.by_counter(&a, 1).await.unwrap().unwrap();
    assert_eq!(first_of_a.batch_id.as_deref(), Some("b1"));

    // a window for a, never confirmed by the network
    let taken = [(first_of_a.id.clone(), "dl-1".to_owned())];
    s.mark_scheduled(&taken, 3000).await.unwrap();
    assert_eq!(
        s.unconfirmed_handovers(3001).await.unwrap(),
        [(a.clone(), "dl-1".to_owned())]
    );
    assert!(s.unconfirmed_handovers(3000).await.unwrap().is_empty());

    // cancelled by a named token: the entry says who
    let b_cmd = s.list(&b, None, 10).await.unwrap().remove(0);
    let by = Origin::Token("ops".into());
    let (c, e) = s
        .cancel(&b_cmd.id, &by, "not needed", 3500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.state, e.origin),
        (CommandState::Cancelled, Some(by.clone()))
    );
    assert!(
        s.cancel(&b_cmd.id, &by, "again", 3600)
            .await
            .unwrap()
            .is_none()
    );

    // expiry ends what is still queued past its time (sf expires at 62,000)
    let expired = s.expire_due(62_000).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0.state, CommandState::Expired);
    assert_eq!(
        s.devices_with_open_commands().await.unwrap(),
        std::slice::from_ref(&a)
    );

    // the history in the order it happened, with the canceller
    let since = s.history_since(3000).await.unwrap();
    let seen: Vec<(&str, CommandState)> = since
        .iter()
        .map(|(c, e)| (c.id.as_str(), e.state))
        .collect();
    assert_eq!(
        seen,
        [
            (first_of_a.id.as_str(), CommandState::Scheduled),
            (b_cmd.id.as_str(), CommandState::Cancelled),
            ("sf", CommandState::Expired)
        ]
    );
    assert_eq!(since[1].1.origin, Some(by));

    // the events' bookkeeping only moves forward
    assert_eq!(s.events_confirmed_through().await.unwrap(), None);
    s.set_events_confirmed_through(5000).await.unwrap();
    s.set_events_confirmed_through(4000).await.unwrap();
    assert_eq!(s.events_confirmed_through().await.unwrap(), Some(5000));

    // group memberships, and a quota of no single device
    s.set_group_member("north", &a, "api", true).await.unwrap();
    s.set_group_member("north", &a, "api", true).await.unwrap();
    s.set_group_member("north", &b, "tag", true).await.unwrap();
    s.set_group_member("north", &b, "tag", false).await.unwrap();
    assert_eq!(
        s.group_members().await.unwrap(),
        [("north".to_owned(), a.clone(), "api".to_owned())]
    );
    assert!(s.take_shared_quota("sms", 7, 1).await.unwrap());
    assert!(!s.take_shared_quota("sms", 7, 1).await.unwrap());
    s.return_shared_quota("sms", 7).await.unwrap();
    assert!(s.take_shared_quota("sms", 7, 1).await.unwrap());
    assert!(s.ping().await);
}
