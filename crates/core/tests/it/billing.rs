//! The account's ledger, `GET /v2/billing/transactions`, read page by page
//! or whole, and set against what the jobs reported.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use aimlvid::{Credits, Direction, Error, TransactionQuery, TransactionType};
use aimlvid_sim::{Fault, Route, SimConfig};

use crate::{config, extend_request, start};

const HEADLINE: &str = "google/veo3-1-fast-extend-video";

fn billing_calls(sim: &aimlvid_sim::RunningSim) -> usize {
    sim.requests().iter().filter(|r| r.route == Route::Billing).count()
}

#[tokio::test]
async fn each_completed_job_is_charged_under_its_id_what_it_reported() {
    let (_sim, client) = start(SimConfig { credits_per_job: 2480.0, ..config() }).await;
    let since = SystemTime::now() - Duration::from_secs(60);
    let first = client.create_and_wait(&extend_request()).await.unwrap();
    let second = client.create_and_wait(&extend_request()).await.unwrap();

    let charges = client.model_charges_since(since).await.unwrap();
    let ids: Vec<&str> = charges.iter().filter_map(|c| c.reference_id.as_deref()).collect();
    assert_eq!(ids, [second.id.as_str(), first.id.as_str()], "newest first");
    for (charge, job) in charges.iter().zip([&second, &first]) {
        assert!(charge.is_model_charge());
        assert_eq!(charge.model.as_deref(), Some(HEADLINE));
        assert_eq!(Some(charge.amount.credits), job.credits_used().and_then(Credits::from_f64_rounded));
        assert_eq!(charge.amount.usd, 0.00124);
        assert_eq!(charge.amount.credits.to_string(), "2,480 credits ($0.00124)");
        let at = charge.created_at_time().expect("a readable time");
        assert!(at >= since && at <= SystemTime::now() + Duration::from_secs(1), "{}", charge.created_at);
    }
    // Recorded since the creates only: a window that ends before them is empty.
    let before = TransactionQuery::model_charges().from(since - Duration::from_secs(60)).to(since);
    assert!(client.billing_transactions(&before).await.unwrap().data.is_empty());
}

#[tokio::test]
async fn every_page_is_walked_and_a_planted_difference_shows() {
    let (sim, client) =
        start(SimConfig { time_scale: 0.0, credit_balance: Some(9_000_000.0), ..config() }).await;
    let mut ids = HashSet::new();
    for _ in 0..5 {
        let job = client.create(&extend_request()).await.unwrap();
        assert!(sim.complete_now(&job.id));
        ids.insert(job.id);
    }
    let misbilled = ids.iter().next().unwrap().clone();
    assert!(sim.charge_differently(&misbilled, 200_000));
    let foreign = sim.add_foreign_charge(HEADLINE, 60_000);

    let before = billing_calls(&sim);
    let charges = client.all_billing_transactions(&TransactionQuery::model_charges().limit(2)).await.unwrap();
    assert_eq!(billing_calls(&sim) - before, 3, "pages of 2, 2 and 2");
    let seen: HashSet<String> = charges.iter().filter_map(|c| c.reference_id.clone()).collect();
    assert_eq!(seen.len(), 6);
    assert!(seen.contains(&foreign) && ids.is_subset(&seen));
    let amount =
        |id: &str| charges.iter().find(|c| c.reference_id.as_deref() == Some(id)).unwrap().amount.credits;
    assert_eq!(amount(&misbilled), Credits::new(200_000));
    assert_eq!(amount(&foreign), Credits::new(60_000));
    let reported = client.get(&misbilled).await.unwrap().credits_used();
    assert_eq!(reported, Some(120_000.0), "the job said otherwise");

    // The opening balance is the one top-up.
    let page =
        client.billing_transactions(&TransactionQuery::new().direction(Direction::Topup)).await.unwrap();
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.data[0].kind, TransactionType::Init);
    assert_eq!((page.next_cursor, page.has_more), (None, false));
    let net: Credits = client
        .all_billing_transactions(&TransactionQuery::new())
        .await
        .unwrap()
        .iter()
        .map(|t| t.signed_credits())
        .sum();
    // Top-ups less charges, each charge as billed (not as reported).
    assert_eq!(net, Credits::new(9_000_000 - 4 * 120_000 - 200_000 - 60_000));
}

#[tokio::test]
async fn ledger_reads_are_retried_like_polls_and_bad_queries_are_not_sent() {
    let (sim, client) = start(config()).await;
    sim.inject(Route::Billing, Fault::Status(503), 2);
    let page = client.billing_transactions(&TransactionQuery::new()).await.unwrap();
    assert!(page.data.is_empty() && !page.has_more);
    assert_eq!(billing_calls(&sim), 3, "two 503s ridden out");

    // The API's refusal is not retried.
    let err =
        client.billing_transactions(&TransactionQuery::new().cursor("not-one-of-its")).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidRequest { message, .. } if message.contains("cursor")), "{err:?}");
    assert_eq!(billing_calls(&sim), 4);

    // Nor is a query it would refuse even sent.
    let now = SystemTime::now();
    for bad in
        [TransactionQuery::new().limit(0), TransactionQuery::new().from(now).to(now - Duration::from_secs(1))]
    {
        let err = client.billing_transactions(&bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    }
    assert_eq!(billing_calls(&sim), 4);
}
