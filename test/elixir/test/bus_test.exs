defmodule BusTest do
  # The public API from Elixir: keyword options, binaries, errors, and the
  # notices a subscriber gets. Each test makes its own bus and removes it.
  use ExUnit.Case

  setup_all do
    dir = Path.join(System.tmp_dir!(), "bus-exunit-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    System.put_env("XDG_RUNTIME_DIR", dir)
    Application.put_env(:bus, :default_bus, :none)
    {:ok, _} = Application.ensure_all_started(:bus)

    on_exit(fn ->
      :ok = Application.stop(:bus)
      File.rm_rf!(dir)
    end)

    %{dir: dir}
  end

  setup %{dir: dir} do
    path = Path.join(dir, "b#{System.unique_integer([:positive])}")
    {:ok, bus} = :bus.create(path, true)
    on_exit(fn -> :bus.remove(bus) end)
    %{bus: bus}
  end

  test "subscribe, broadcast a string and a binary, unsubscribe", %{bus: bus} do
    :ok = :bus.subscribe(bus)
    :ok = :bus.broadcast(bus, "0 héllo")
    assert_receive {:bus, ^bus, "0 héllo"}
    :ok = :bus.broadcast(bus, <<"0 raw">>, timeout: 1000)
    assert_receive {:bus, ^bus, "0 raw"}
    assert :bus.subscribers(bus) == [self()]
    :ok = :bus.unsubscribe(bus)
    assert :bus.subscribers(bus) == []
  end

  test "keyword options: active once, then activate", %{bus: bus} do
    :ok = :bus.subscribe(bus, active: :once, max_queue: 10, overflow: :drop)
    for i <- 1..3, do: :ok = :bus.broadcast(bus, "#{i}")
    assert_receive {:bus, ^bus, "1"}
    assert_receive {:bus_passive, ^bus}
    %{subscriptions: %{} = subs} = :bus.info(bus)
    assert %{active: false, queued: 2, max_queue: 10} = subs[self()]
    :ok = :bus.activate(bus, 2)
    assert_receive {:bus, ^bus, "2"}
    assert_receive {:bus, ^bus, "3"}
    :ok = :bus.unsubscribe(bus)
  end

  test "drops are told where they happen", %{bus: bus} do
    :ok = :bus.subscribe(bus, %{active: false, max_queue: 1})
    for i <- 1..4, do: :ok = :bus.broadcast(bus, "#{i}")
    :ok = :bus.activate(bus, true)
    assert_receive {:bus, ^bus, "1"}
    assert_receive {:bus_dropped, ^bus, 3}
    :ok = :bus.unsubscribe(bus)
  end

  test "errors are tuples; terms of the wrong type raise", %{bus: bus} do
    assert {:error, :message_contains_nul} = :bus.broadcast(bus, "a\0b")
    assert {:error, :message_too_long} = :bus.broadcast(bus, String.duplicate("x", 2048))
    assert {:error, :enoent} = :bus.subscribe(bus <> ".missing")
    assert {:error, {:unknown_bus, :nowhere}} = :bus.subscribe(:nowhere)
    assert_raise ArgumentError, fn -> :bus.subscribe(bus, active: :twice) end
    assert {:error, :not_subscribed} = :bus.activate(bus)
  end

  test "a removed bus: bus_down", %{bus: bus} do
    :ok = :bus.subscribe(bus)
    :ok = :bus.remove(bus)
    assert_receive {:bus_down, ^bus, :gone}
  end

  test "a restarted server: bus_gap, then messages again", %{bus: bus} do
    :ok = :bus.subscribe(bus)
    [{^bus, srv}] = :ets.lookup(:bus_servers, bus)
    ref = Process.monitor(srv)
    Process.exit(srv, :kill)
    assert_receive {:DOWN, ^ref, :process, ^srv, :killed}
    assert_receive {:bus_gap, ^bus}, 5000
    :ok = :bus.broadcast(bus, "after")
    assert_receive {:bus, ^bus, "after"}
    :ok = :bus.unsubscribe(bus)
  end

  test "documentation: h :bus.subscribe in IEx" do
    {:docs_v1, _, :erlang, _, %{"en" => _}, _, docs} = Code.fetch_docs(:bus)
    assert [{_, _, _, %{"en" => doc}, _}] =
             for({{:function, :subscribe, 2}, _, _, _, _} = d <- docs, do: d)

    assert doc != []
    help = ExUnit.CaptureIO.capture_io(fn -> IEx.Introspection.h({:bus, :subscribe, 2}) end)
    assert help =~ "flow control options"
  end

  test "info of every bus", %{bus: bus} do
    :ok = :bus.subscribe(bus)
    assert %{^bus => %{path: ^bus, subscribers: [_]}} = :bus.info()
    :ok = :bus.unsubscribe(bus)
  end
end
