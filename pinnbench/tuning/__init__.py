"""pinnbench tune: the protocol and study, the trials as cells, the study page (a solver declares
its search ranges with pinnbench.search_space)."""
