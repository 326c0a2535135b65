# ExUnit tests of the bus application's public API, used as an Elixir
# project uses it: a dependency built by rebar3 (`manager: :rebar3`; MIX_REBAR3
# names the system rebar3). Run them with test/elixir/run, which points
# BUS_APP_DIR at a copy of apps/bus so that mix builds nothing inside the
# source tree.
defmodule BusElixirTest.MixProject do
  use Mix.Project

  def project do
    [
      app: :bus_elixir_test,
      version: "0.1.0",
      elixir: "~> 1.14",
      deps: [{:bus, path: System.get_env("BUS_APP_DIR", "../../apps/bus"), manager: :rebar3}]
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end
end
