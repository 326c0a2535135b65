%% @doc Rate-limited logging of a process's bus events (bus_srv,
%% bus_bridge): an event of a kind is logged at most once per ?INTERVAL;
%% the others are counted, and the next one logged says how many (count:
%% events, or messages where the event is about messages). The caller keeps
%% the record of what was logged in its state and sets its process metadata
%% (domain [bus], the bus's pathname).
-module(bus_log).

-include_lib("kernel/include/logger.hrl").

-export([event/5]).
-export_type([logged/0]).

-define(INTERVAL, 10000).

%% Per kind of event: when it was last logged (monotonic ms), and the count
%% held back since.
-type logged() :: #{atom() => {integer(), non_neg_integer()}}.

-spec event(atom(), logger:level(), map(), non_neg_integer(), logged()) -> logged().
event(What, Level, Report, Count, Logged) ->
    Now = erlang:monotonic_time(millisecond),
    case maps:get(What, Logged, none) of
        {Last, Pending} when Now - Last < ?INTERVAL ->
            Logged#{What => {Last, Pending + Count}};
        Previous ->
            Pending = case Previous of
                none -> 0;
                {_, P} -> P
            end,
            logger:log(Level, Report#{what => What, count => Count + Pending}, ?LOCATION),
            Logged#{What => {Now, 0}}
    end.
