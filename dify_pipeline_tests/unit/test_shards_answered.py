import threading

from dify_pipeline.infer.shards_answered import ShardsAnswered


def answered_shards(shards: ShardsAnswered, count: int) -> list[int]:
    """The shards `wait` lets through right now (each asked from a thread that gives up after a moment)."""
    through = []
    for shard in range(count):
        done = threading.Event()
        threading.Thread(target=lambda shard=shard, done=done: shards.wait(shard) and done.set(), daemon=True).start()
        if done.wait(0.05):
            through.append(shard)
    return through


def test_a_shard_is_answered_once_its_requests_and_those_of_every_shard_before_it_have_their_results():
    shards = ShardsAnswered(3)
    shards.sending(0, ["a", "b"])
    shards.sending(1, ["c"])  # shard 0 is all taken
    assert answered_shards(shards, 3) == []
    shards.answered("c")  # shard 1's own request answered, shard 0's not yet
    assert answered_shards(shards, 3) == []
    shards.answered("a")
    shards.answered("b")
    assert answered_shards(shards, 3) == [0]  # shard 1 may still take requests
    shards.sending(2, [])
    assert answered_shards(shards, 3) == [0, 1]
    shards.taken_all()
    assert answered_shards(shards, 3) == [0, 1, 2]


def test_a_shard_that_sends_nothing_waits_for_the_answers_of_the_shards_before_it():
    shards = ShardsAnswered(2)
    shards.sending(0, ["a"])
    shards.sending(1, [])  # its input was sent with shard 0
    shards.taken_all()
    assert answered_shards(shards, 2) == []
    shards.answered("a")
    assert answered_shards(shards, 2) == [0, 1]


def test_an_answer_of_a_key_not_taken_here_changes_nothing():
    shards = ShardsAnswered(1)
    shards.sending(0, ["a"])
    shards.taken_all()
    shards.answered("z")
    assert answered_shards(shards, 1) == []


def test_the_end_of_the_sending_lets_every_shard_through_and_a_stop_tells_the_writer_to_write_nothing():
    ended = ShardsAnswered(2)
    ended.sending(0, ["a"])
    ended.end()
    assert ended.wait(1) is True
    stopped = ShardsAnswered(2)
    stopped.sending(0, ["a"])
    stopped.end(stopped=True)
    assert stopped.wait(0) is False
