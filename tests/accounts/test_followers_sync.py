"""Follower sync against the sandbox: paging, batchget chunks, unsubscribes, reruns, bindings, errors."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import Follower, FollowerSync, OfficialAccount
from accounts.services import followers as services
from accounts.services import run_follower_sync, start_follower_sync, sync_followers
from sandbox.demo import DEMO_APPID
from tests.factories import create_demo_account
from wxnotify.wechat.errors import WeChatError

# Assertions read the English source strings, whatever translations the project ships.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


@pytest.fixture
def account(sandbox_api, settings) -> OfficialAccount:
    return create_demo_account()


def test_sync_pages_across_10000_and_batches_by_100(sandbox_api, account, monkeypatch):
    sandbox_api.update_account(DEMO_APPID, followers=25_000)
    following = sandbox_api.followers()
    calls = {"user/get": 0, "batchget": []}
    real_client_for = services.wechat_client_for

    def counting_client_for(acc):
        client = real_client_for(acc)
        get_followers, batch_get = client.get_followers, client.batch_get_user_info

        def counted_get(next_openid=None):
            calls["user/get"] += 1
            return get_followers(next_openid)

        def counted_batch(openids, lang="zh_CN"):
            calls["batchget"].append(len(openids))
            return batch_get(openids, lang)

        client.get_followers, client.batch_get_user_info = counted_get, counted_batch
        return client

    monkeypatch.setattr(services, "wechat_client_for", counting_client_for)
    progress = []
    result = sync_followers(account, progress=lambda processed, total: progress.append((processed, total)))

    assert result.total == len(following)
    assert (result.created, result.updated, result.unsubscribed) == (len(following), 0, 0)
    assert calls["user/get"] == 3
    assert max(calls["batchget"]) == 100 and sum(calls["batchget"]) == len(following)
    assert progress == [(10_000, len(following)), (20_000, len(following)), (len(following), len(following))]
    assert Follower.objects.filter(account=account, subscribed=True).count() == len(following)
    assert set(Follower.objects.filter(account=account).values_list("openid", flat=True)) == set(following)

    sample = following[3]  # index 3: seeded with a unionid (every third follower has one)
    follower = Follower.objects.get(account=account, openid=sample)
    info = sandbox_api.account().followers[sample]
    assert follower.unionid == info.unionid != ""
    assert follower.subscribe_scene == info.subscribe_scene
    assert int(follower.subscribed_at.timestamp()) == info.subscribe_time
    assert follower.source == Follower.Source.SYNC and follower.synced_at is not None


def wrap_client(monkeypatch, *, get_followers=None, batch_get=None) -> None:
    """Have ``sync_followers`` use clients whose user/get and batchget calls go through the given wrappers,
    each called with the real method first."""
    real_client_for = services.wechat_client_for

    def client_for(acc):
        client = real_client_for(acc)
        real_get, real_batch = client.get_followers, client.batch_get_user_info
        if get_followers is not None:
            client.get_followers = lambda next_openid=None: get_followers(real_get, next_openid)
        if batch_get is not None:
            client.batch_get_user_info = lambda openids, lang="zh_CN": batch_get(real_batch, openids)
        return client

    monkeypatch.setattr(services, "wechat_client_for", client_for)


def test_batchget_calls_overlap_yet_pages_are_written_in_order_two_pages_at_most_in_hand(
    sandbox_api, account, monkeypatch
):
    """Chunks answer out of order (the earlier a chunk, the slower), several at once; every page is still
    written in user/get order, and no page beyond the next one is asked for while a page is written."""
    sandbox_api.update_account(DEMO_APPID, followers=25_000)
    following = sandbox_api.followers()
    position = {openid: index for index, openid in enumerate(following)}
    lock = threading.Lock()
    in_flight, most_in_flight, pages_asked = [0], [0], set()

    def slow_early_chunks(real, openids):
        first = position[openids[0]]
        with lock:
            in_flight[0] += 1
            most_in_flight[0] = max(most_in_flight[0], in_flight[0])
            pages_asked.add(first // 10_000)
        try:
            time.sleep(0.004 * (99 - (first % 10_000) // 100) / 99)
            return real(openids)
        finally:
            with lock:
                in_flight[0] -= 1

    wrap_client(monkeypatch, batch_get=slow_early_chunks)
    written = []
    real_store = services._store_followers

    def store(acc, infos, now):
        written.append([info["openid"] for info in infos])
        return real_store(acc, infos, now)

    monkeypatch.setattr(services, "_store_followers", store)
    asked_when_written = []
    result = sync_followers(account, progress=lambda processed, total: asked_when_written.append(max(pages_asked)))

    assert [openid for page in written for openid in page] == following
    assert [len(page) for page in written] == [10_000, 10_000, len(following) - 20_000]
    assert 1 < most_in_flight[0] <= services.USER_INFO_CONCURRENCY
    # Page k (0-based) is written while at most page k + 1 is being fetched.
    assert all(asked <= page + 1 for page, asked in enumerate(asked_when_written))
    assert (result.total, result.created, result.updated, result.unsubscribed) == (len(following), len(following), 0, 0)
    sample = following[-1]
    info = sandbox_api.account().followers[sample]
    follower = Follower.objects.get(account=account, openid=sample)
    assert int(follower.subscribed_at.timestamp()) == info.subscribe_time
    assert follower.subscribe_scene == info.subscribe_scene


def test_a_failing_batchget_chunk_mid_page_fails_the_sync_and_keeps_the_pages_written(
    sandbox_api, account, monkeypatch
):
    sandbox_api.update_account(DEMO_APPID, followers=25_000)
    following = sandbox_api.followers()
    broken = following[13_700]  # page 2, chunk 38

    def fail_one_chunk(real, openids):
        # An openid WeChat does not know: the sandbox answers 40003 for the whole call.
        return real(["oUnknownToTheSandbox" if openid == broken else openid for openid in openids])

    user_gets = []

    def count_user_gets(real, next_openid):
        user_gets.append(next_openid)
        return real(next_openid)

    wrap_client(monkeypatch, get_followers=count_user_gets, batch_get=fail_one_chunk)
    sync = start_follower_sync(account)
    progress = []
    assert run_follower_sync(sync, progress=lambda processed, total: progress.append(processed)) is None

    sync.refresh_from_db()
    assert sync.status == FollowerSync.Status.FAILED
    assert sync.error.startswith("WeChat error 40003")
    assert progress == [10_000] and sync.processed == 10_000
    assert len(user_gets) == 2  # the third page was never asked for
    stored = set(Follower.objects.filter(account=account).values_list("openid", flat=True))
    assert stored == set(following[:10_000])
    with pytest.raises(WeChatError):
        sync_followers(account)


def test_a_failing_user_get_after_a_page_writes_that_page_first(sandbox_api, account, monkeypatch):
    sandbox_api.update_account(DEMO_APPID, followers=15_000)
    following = sandbox_api.followers()

    def second_page_fails(real, next_openid):
        return real("oUnknownToTheSandbox" if next_openid else None)

    wrap_client(monkeypatch, get_followers=second_page_fails)
    progress = []
    with pytest.raises(WeChatError) as caught:
        sync_followers(account, progress=lambda processed, total: progress.append((processed, total)))
    assert caught.value.errcode == 40003
    assert progress == [(10_000, len(following))]
    assert Follower.objects.filter(account=account).count() == 10_000


def test_existing_rows_keep_what_the_sync_does_not_own_and_counts_split_new_from_known(sandbox_api, account):
    sandbox_api.update_account(DEMO_APPID, followers=120)
    following = sandbox_api.followers()
    user = get_user_model().objects.create_user("bob")
    known = following[10:17]
    for openid in known:
        Follower.objects.create(
            account=account, openid=openid, source=Follower.Source.CALLBACK, remark="from the callback", user=user
        )
    result = sync_followers(account)
    assert (result.created, result.updated, result.unsubscribed) == (len(following) - len(known), len(known), 0)
    for follower in Follower.objects.filter(openid__in=known):
        assert (follower.source, follower.remark, follower.user) == (
            Follower.Source.CALLBACK,
            "from the callback",
            user,
        )
        assert follower.synced_at is not None and follower.subscribe_scene != ""
    new = Follower.objects.get(openid=following[0])
    assert new.source == Follower.Source.SYNC and new.user is None and new.created_at == new.updated_at


def test_followers_without_a_subscribe_time_and_users_who_left_between_list_and_details(
    sandbox_api, account, monkeypatch
):
    sandbox_api.update_account(DEMO_APPID, followers=120)
    following = sandbox_api.followers()
    for openid in following:
        sandbox_api.account().followers[openid].subscribe_time = 0
    first = sync_followers(account)
    assert first.created == len(following)
    assert not Follower.objects.filter(subscribed_at__isnull=False).exists()

    for openid in following[:60]:
        sandbox_api.account().followers[openid].subscribe_time = 1_700_000_000
    leaving = following[100:103]
    Follower.objects.filter(openid=leaving[0]).delete()

    def leave_after_listing(real, next_openid):
        page = real(next_openid)
        for openid in leaving:
            sandbox_api.state.simulate_unsubscribe(DEMO_APPID, openid)
        return page

    wrap_client(monkeypatch, get_followers=leave_after_listing)
    again = sync_followers(account)
    # The page still lists the three; their details say they left: one row is new, two are updated.
    assert (again.created, again.updated, again.unsubscribed) == (1, len(following) - 1, 3)
    assert Follower.objects.filter(subscribed_at__isnull=False).count() == 60
    for follower in Follower.objects.filter(openid__in=leaving):
        assert not follower.subscribed and follower.unsubscribed_at is not None
    kept = Follower.objects.get(openid=leaving[1])
    assert kept.subscribe_scene != "" and kept.source == Follower.Source.SYNC
    assert Follower.objects.get(openid=leaving[0]).subscribe_scene == ""


def test_rerun_is_idempotent_marks_unsubscribed_and_keeps_bindings(sandbox_api, account):
    sandbox_api.update_account(DEMO_APPID, followers=120)
    first = sync_followers(account)
    following = sandbox_api.followers()
    assert first.created == len(following)

    user = get_user_model().objects.create_user("alice")
    bound = Follower.objects.get(account=account, openid=following[0])
    bound.user, bound.remark = user, "VIP, call before delivery"
    bound.save()

    again = sync_followers(account)
    assert (again.total, again.created, again.updated, again.unsubscribed) == (len(following), 0, len(following), 0)
    assert Follower.objects.filter(account=account).count() == len(following)

    gone = following[:5]
    for openid in gone:
        sandbox_api.state.simulate_unsubscribe(DEMO_APPID, openid)
    later = sync_followers(account)
    assert later.unsubscribed == len(gone)
    assert later.total == len(following) - len(gone)
    unsubscribed = Follower.objects.filter(account=account, subscribed=False)
    assert set(unsubscribed.values_list("openid", flat=True)) == set(gone)
    assert all(follower.unsubscribed_at is not None for follower in unsubscribed)

    bound.refresh_from_db()
    assert (bound.user, bound.remark, bound.subscribed) == (user, "VIP, call before delivery", False)

    sandbox_api.state.account(DEMO_APPID).subscribe(gone[0])
    back = sync_followers(account)
    bound.refresh_from_db()
    assert back.unsubscribed == 0
    assert bound.subscribed and bound.user == user


def test_follower_subscribed_by_callback_during_a_sync_is_not_marked_unsubscribed(sandbox_api, account, monkeypatch):
    """Rows written after the sync started (a subscribe callback) are newer than the run: left alone."""
    sandbox_api.update_account(DEMO_APPID, followers=10)
    real_client_for = services.wechat_client_for

    def client_for(acc):
        client = real_client_for(acc)
        get_followers = client.get_followers

        def get_and_subscribe(next_openid=None):
            Follower.objects.get_or_create(account=acc, openid="oCallbackDuringSync", source=Follower.Source.CALLBACK)
            return get_followers(next_openid)

        client.get_followers = get_and_subscribe
        return client

    monkeypatch.setattr(services, "wechat_client_for", client_for)
    result = sync_followers(account)
    assert result.unsubscribed == 0
    assert Follower.objects.get(openid="oCallbackDuringSync").subscribed


def test_wechat_error_fails_the_sync_in_words_and_is_recorded(sandbox_api, account):
    account.app_secret = "0" * 32
    account.save()
    sync = start_follower_sync(account)
    assert run_follower_sync(sync) is None
    sync.refresh_from_db()
    assert sync.status == FollowerSync.Status.FAILED and sync.finished_at is not None
    assert sync.error.startswith("WeChat error 40125: invalid appsecret")
    account.refresh_from_db()
    assert account.last_error_code == 40125 and "40125" in account.last_error_message
    assert "0" * 32 not in sync.error + account.last_error_message


def test_a_claimed_sync_is_not_run_twice_and_only_one_runs_per_account(sandbox_api, account):
    sync = start_follower_sync(account)
    assert start_follower_sync(account) is None
    assert run_follower_sync(sync) is not None
    assert run_follower_sync(sync) is None
    sync.refresh_from_db()
    assert sync.status == FollowerSync.Status.DONE
    assert sync.processed == sync.total == len(sandbox_api.followers())
    assert start_follower_sync(account) is not None


def test_sync_followers_command(sandbox_api, account):
    sandbox_api.update_account(DEMO_APPID, followers=250)
    out, err = StringIO(), StringIO()
    call_command("sync_followers", "--appid", DEMO_APPID, stdout=out, stderr=err)
    total = len(sandbox_api.followers())
    assert f"{total} followers at WeChat; {total} new, 0 updated, 0 marked unsubscribed." in out.getvalue()
    assert f"{total}/{total}" in err.getvalue()  # the tqdm bar
    assert FollowerSync.objects.get().status == FollowerSync.Status.DONE


def test_sync_followers_command_fails_in_words(sandbox_api, account):
    account.app_secret = "0" * 32
    account.save()
    with pytest.raises(CommandError) as caught:
        call_command("sync_followers", stdout=StringIO(), stderr=StringIO())
    assert "WeChat error 40125: invalid appsecret" in str(caught.value)
    assert caught.value.returncode == 1
    with pytest.raises(CommandError, match="No official account with AppID wx0000000000000000"):
        call_command("sync_followers", "--appid", "wx0000000000000000", stdout=StringIO())


def test_a_sync_whose_worker_died_does_not_block_the_next(account):
    stale = FollowerSync.objects.create(account=account, status=FollowerSync.Status.RUNNING)
    FollowerSync.objects.filter(pk=stale.pk).update(
        queued_at=timezone.now() - timedelta(seconds=services.FOLLOWER_SYNC_TIMEOUT + 1)
    )
    fresh = start_follower_sync(account)
    assert fresh is not None and fresh.status == FollowerSync.Status.QUEUED
    stale.refresh_from_db()
    assert stale.status == FollowerSync.Status.FAILED and stale.error.startswith("Abandoned")
