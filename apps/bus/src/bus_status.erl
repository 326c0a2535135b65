%% @doc The node's buses as a table, for operators: `bin/bus status'
%% (rel/extensions/status) prints it. One line per bus this node serves,
%% from bus:info/0: its pathname, subscribers, processes listening on it
%% (S), messages received and forwarded, messages held and dropped for
%% its subscribers (flow control), whether a subscriber with overflow
%% block holds it, and the backend with its native version.
-module(bus_status).

-export([table/0, format/1]).

-define(HEADER, ["BUS", "SUBSCRIBERS", "LISTENERS", "RECEIVED", "FORWARDED", "QUEUED",
                 "DROPPED", "BLOCKED", "BACKEND"]).

%% @doc The table of bus:info/0, as text.
-spec table() -> binary().
table() ->
    format(bus:info()).

%% @doc The table of a map of bus:info/1 results by pathname.
-spec format(#{binary() => bus:info()}) -> binary().
format(Infos) ->
    Rows = [row(Path, Info) || {Path, Info} <- lists:sort(maps:to_list(Infos))],
    Widths = lists:foldl(fun(Row, Ws) -> [max(W, string:length(C)) || {W, C} <- lists:zip(Ws, Row)] end,
                         [string:length(H) || H <- ?HEADER], Rows),
    Lines = [line(Widths, Row) || Row <- [?HEADER | Rows]],
    Footer = io_lib:format("~b bus~s served by node ~s~n",
                           [length(Rows), plural(length(Rows)), node()]),
    unicode:characters_to_binary([Lines, Footer]).

row(Path, Info = #{subscriptions := Subs}) ->
    Sum = fun(Key) -> lists:sum([maps:get(Key, S, 0) || S <- maps:values(Subs)]) end,
    [unicode:characters_to_list(Path),
     integer_to_list(length(maps:get(subscribers, Info, []))),
     case maps:get(listeners, Info, undefined) of
         undefined -> "?";
         S -> integer_to_list(S)
     end,
     integer_to_list(maps:get(received, Info, 0)),
     integer_to_list(maps:get(forwarded, Info, 0)),
     integer_to_list(Sum(queued)),
     integer_to_list(Sum(dropped)),
     case maps:get(blocked, Info, false) of
         true -> "yes";
         false -> "no"
     end,
     io_lib:format("~s ~b", [backend_name(maps:get(backend, Info, undefined)),
                             maps:get(native, Info, 0)])].

backend_name(Backend) when is_atom(Backend) -> atom_to_list(Backend);
backend_name(Other) -> io_lib:format("~p", [Other]).

%% Left-aligned columns two spaces apart, numbers right-aligned.
line(Widths, Row) ->
    Cells = [pad(W, C, I) || {I, {W, C}} <- lists:enumerate(lists:zip(Widths, Row))],
    [string:trim(lists:join("  ", Cells), trailing), $\n].

pad(W, C, 1) -> string:pad(C, W, trailing);
pad(W, C, I) when I =:= 8; I =:= 9 -> string:pad(C, W, trailing);
pad(W, C, _) -> string:pad(C, W, leading).

plural(1) -> "";
plural(_) -> "es".
