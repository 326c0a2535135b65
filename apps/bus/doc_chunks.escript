#!/usr/bin/env escript
%% Build glue, run after every compile (rebar.config post_hooks): puts the
%% modules' documentation (EDoc comments, as EEP-48 chunks made by
%% edoc_doclet_chunks) into their .beam files, as the "Docs" chunk, so that
%% `h :bus.subscribe' in IEx and `h(bus, subscribe)' in the Erlang shell
%% find it wherever the beams are: a release, a mix or rebar3 dependency.
%% Modules whose beam has its docs already are skipped.
-mode(compile).

main(_) ->
    Ebin = ebin(),
    Sources = [S || S <- filelib:wildcard("src/*.erl"), not has_docs(beam(Ebin, S))],
    Tmp = tmp_dir(),
    try
        ok = edoc:files(Sources, [{doclet, edoc_doclet_chunks}, {layout, edoc_layout_chunks},
                                  {preprocess, true}, {includes, ["include"]}, {dir, Tmp}]),
        [embed(beam(Ebin, S), filename:join([Tmp, "chunks", module(S) ++ ".chunk"]))
         || S <- Sources],
        ok
    after
        _ = file:del_dir_r(Tmp)
    end.

%% Where this compile put the beams: mix's output directory, rebar3's
%% build directory, or in place.
ebin() ->
    Candidates = [filename:join(D, "ebin") || D <- env("REBAR_BARE_COMPILER_OUTPUT_DIR")]
        ++ [filename:join([D, "lib", "bus", "ebin"]) || D <- env("REBAR_BUILD_DIR")]
        ++ ["ebin"],
    hd([D || D <- Candidates, filelib:is_regular(filename:join(D, "bus.beam"))] ++ ["ebin"]).

env(Name) ->
    case os:getenv(Name) of
        false -> [];
        "" -> [];
        Value -> [Value]
    end.

module(Source) -> filename:basename(Source, ".erl").
beam(Ebin, Source) -> filename:join(Ebin, module(Source) ++ ".beam").

has_docs(Beam) ->
    case beam_lib:chunks(Beam, ["Docs"], [allow_missing_chunks]) of
        {ok, {_, [{"Docs", Bin}]}} -> is_binary(Bin);
        _ -> false
    end.

embed(Beam, Chunk) ->
    case {file:read_file(Chunk), beam_lib:all_chunks(Beam)} of
        {{ok, Docs}, {ok, _, Chunks}} ->
            {ok, Bin} = beam_lib:build_module(lists:keystore("Docs", 1, Chunks, {"Docs", Docs})),
            ok = file:write_file(Beam, Bin);
        _ ->
            %% No beam (not compiled here) or no chunk (edoc made none).
            ok
    end.

tmp_dir() ->
    Dir = filename:join(case os:getenv("TMPDIR") of false -> "/tmp"; T -> T end,
                        "bus_doc_chunks." ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Dir.
